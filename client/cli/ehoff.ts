import { Command, CommanderError } from 'commander';
import { fileURLToPath } from 'node:url';
import type { TemporalTarget } from './connect.js';
import { CliError, EXIT } from './exit-codes.js';
import { eventCommands } from './events-command.js';
import { handoffCommands } from './handoff-commands.js';
import { listCommand } from './list-command.js';
import { planCommand } from './plan-command.js';
import { vmCommands } from './vm-commands.js';
import { watchCommand } from './watch-command.js';

/**
 * npm run ehoff -- <command> [options]: an operator's hand on a deployment — launch a VM, move it,
 * see where it runs, steer, follow or cancel its handoff. `--help` on each command; `--json` for
 * scripts. Exit statuses: see exit-codes.ts. `exitStatus` maps them for an entry that promised
 * fewer (see handoff.ts).
 */
export async function runCli(argv: string[], exitStatus: (code: number) => number = (c) => c): Promise<never> {
  const program = new Command('ehoff')
    .description('agile VM handoff between edge cloudlets')
    // Unset, they come from the temporal.toml profile and TEMPORAL_* variables (TLS and API key
    // too), then the embedded default 127.0.0.1:7233 / default.
    .option('--address <host:port>', 'the Temporal server (default: TEMPORAL_ADDRESS, the profile\'s, or 127.0.0.1:7233)')
    .option('--namespace <name>', 'its namespace (default: TEMPORAL_NAMESPACE, the profile\'s, or default)')
    .option('--profile <name>', 'a profile of temporal.toml (TEMPORAL_CONFIG_FILE, else ~/.config/temporalio/temporal.toml; default: TEMPORAL_PROFILE or default)')
    .showHelpAfterError()
    .exitOverride();
  const globals = (): TemporalTarget => program.opts<TemporalTarget>();
  vmCommands(program, globals);
  handoffCommands(program, globals);
  listCommand(program, globals);
  watchCommand(program, globals);
  eventCommands(program, globals);
  planCommand(program, globals);
  const all = (c: Command): Command[] => [c, ...c.commands.flatMap(all)];
  for (const c of all(program).slice(1)) c.exitOverride().showHelpAfterError();
  try {
    await program.parseAsync(argv);
    process.exit(EXIT.OK);
  } catch (err) {
    // --help and --version end here too, having printed what was asked.
    if (err instanceof CommanderError) process.exit(exitStatus(err.exitCode === 0 ? EXIT.OK : EXIT.REJECTED));
    // The server's own words are in the cause ("Failed to list workflows" alone says nothing).
    const cause = err instanceof Error && err.cause instanceof Error ? `: ${err.cause.message}` : '';
    console.error(`ehoff: ${err instanceof Error ? err.message : String(err)}${cause}`);
    process.exit(exitStatus(err instanceof CliError ? err.exitCode : EXIT.FAILED_AT_SOURCE));
  }
}


if (process.argv[1] === fileURLToPath(import.meta.url)) void runCli(process.argv);
