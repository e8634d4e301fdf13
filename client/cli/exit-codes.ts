/**
 * The CLI's exit statuses, distinct per outcome so scripts can branch on them: a handoff that
 * moved, one that failed with the VM running on at its source, one that failed after its commit
 * (the VM's place must be looked up: `ehoff status`), a request rejected before anything started,
 * and no Temporal server to ask.
 */
export const EXIT = {
  OK: 0,
  FAILED_AT_SOURCE: 1,
  REJECTED: 2,
  FAILED_AFTER_COMMIT: 3,
  UNREACHABLE: 4,
} as const;

/** An error the CLI reports as one line and an exit status. */
export class CliError extends Error {
  constructor(message: string, readonly exitCode: number) {
    super(message);
  }
}
