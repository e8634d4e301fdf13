import { runCli } from './ehoff.js';
import { EXIT } from './exit-codes.js';

/**
 * npm run handoff -- --vm <id> --from <cloudlet> --to <cloudlet> [--pin <mode>] [--cap <Mbit/s>] [--post-copy auto|never] [--json]:
 * the CLI's `trigger` under the name and exit statuses it has had since issue 2 — 0 moved, 1
 * failed, 2 rejected — so scripts written against it read the same: a failure after the commit
 * and an unreachable server, which `ehoff` tells apart (3, 4), are 1 here.
 */
void runCli([...process.argv.slice(0, 2), 'trigger', ...process.argv.slice(2)], (code) => (code === EXIT.OK || code === EXIT.REJECTED ? code : EXIT.FAILED_AT_SOURCE));
