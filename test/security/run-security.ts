import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ensureBaseImage } from '../../infra/base-image/build-base-image.js';
import { runSecuritySuite, type SecurityCheck } from './security-suite.js';
import { freshScratch, startSecurityCluster } from './security-cluster.js';

/**
 * `npm run test:security [-- --json]`: the data plane attacked on the real stack (see
 * security-suite.ts), a table of checks, and with --json a last line {"checks": [{name, passed,
 * figure}]}. Exit status 1 if any check failed.
 */
async function main(): Promise<void> {
  const { values } = parseArgs({ options: { json: { type: 'boolean', default: false } } });
  const log = (l: string) => (values.json ? console.error(l) : console.log(l));
  const base = await ensureBaseImage({ memoryMiB: 512, accel: 'tcg', log });
  const root = await freshScratch();
  const cluster = await startSecurityCluster(base.dir, root.dir, log);
  let checks: SecurityCheck[];
  try {
    checks = await runSecuritySuite({ cluster, baseImageId: base.id, workDir: join(root.dir, 'work'), log });
  } finally {
    await cluster.stop();
    await root.remove();
  }
  const passed = checks.filter((c) => c.passed).length;
  log(['| check | result | figure |', '| --- | --- | --- |', ...checks.map((c) => `| ${c.name} | ${c.passed ? 'PASS' : 'FAIL'} | ${c.figure} |`)].join('\n'));
  log(`${passed} passed, ${checks.length - passed} failed`);
  if (values.json) console.log(JSON.stringify({ checks }));
  process.exitCode = passed === checks.length ? 0 : 1;
}

main().catch((err) => {
  console.error(`security suite: ${err instanceof Error ? err.stack : String(err)}`);
  process.exit(2);
});
