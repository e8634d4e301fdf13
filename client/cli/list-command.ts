import type { Command } from 'commander';
import { connect, type TemporalTarget } from './connect.js';
import { CliError, EXIT } from './exit-codes.js';

/** One row of `list`: a handoff workflow and what its memo says it moves. */
export interface HandoffRow {
  workflowId: string;
  status: string;
  vmId?: string;
  source?: string;
  target?: string;
  startedAt: string;
  closedAt?: string;
}

/**
 * `list`: the handoffs the server knows, newest first — visibility's own order (the dev server's
 * SQLite visibility takes no ORDER BY) — within the namespace's retention.
 */
export function listCommand(program: Command, globals: () => TemporalTarget): void {
  program
    .command('list')
    .description('the handoffs the Temporal server knows, newest first')
    .option('--running', 'only those in flight')
    .option('--limit <n>', 'at most this many', Number, 20)
    .option('--json', 'print {"handoffs": [...]} as one JSON line')
    .action(async (o: { running?: boolean; limit: number; json?: boolean }) => {
      if (!(Number.isInteger(o.limit) && o.limit > 0)) throw new CliError(`--limit must be a positive whole number, got ${o.limit}`, EXIT.REJECTED);
      const { client, close } = await connect(globals());
      try {
        const rows: HandoffRow[] = [];
        const query = `WorkflowType = 'handoff'${o.running ? " AND ExecutionStatus = 'Running'" : ''}`;
        const listing = client.workflow.list({ query, pageSize: Math.min(o.limit, 100) });
        for await (const w of listing) {
          const memo = (w.memo ?? {}) as { vmId?: string; source?: string; target?: string };
          rows.push({
            workflowId: w.workflowId, status: w.status.name,
            ...(memo.vmId ? { vmId: memo.vmId } : {}), ...(memo.source ? { source: memo.source } : {}), ...(memo.target ? { target: memo.target } : {}),
            startedAt: w.startTime.toISOString(), ...(w.closeTime ? { closedAt: w.closeTime.toISOString() } : {}),
          });
          if (rows.length >= o.limit) break;
        }
        if (o.json) console.log(JSON.stringify({ handoffs: rows }));
        else if (rows.length === 0) console.log(o.running ? 'no handoff in flight' : 'no handoffs');
        else for (const r of rows) console.log(`${r.startedAt}  ${r.status.padEnd(10)} ${r.vmId ?? '?'} ${r.source ?? '?'} → ${r.target ?? '?'}  (${r.workflowId})`);
      } finally {
        await close();
      }
    });
}
