import type { Command } from 'commander';
import type { WorkflowExecutionInfo } from '@temporalio/client';
import { DowntimeMsSearchAttribute, OutcomeSearchAttribute, PhaseSearchAttribute, TriggerSearchAttribute } from '../../workflows/definitions.js';
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
  /** From its search attributes (absent where the server has none registered). */
  phase?: string;
  outcome?: string;
  downtimeMs?: number;
  trigger?: string;
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
    .option('--query <visibility>', 'only those matching this visibility query, e.g. \'EdgeOutcome = "moved" AND EdgeDowntimeMs > 1000\'')
    .option('--json', 'print {"handoffs": [...]} as one JSON line')
    .action(async (o: { running?: boolean; limit: number; query?: string; json?: boolean }) => {
      if (!(Number.isInteger(o.limit) && o.limit > 0)) throw new CliError(`--limit must be a positive whole number, got ${o.limit}`, EXIT.REJECTED);
      const { client, close } = await connect(globals());
      try {
        const rows: HandoffRow[] = [];
        const query = `WorkflowType = 'handoff'${o.running ? " AND ExecutionStatus = 'Running'" : ''}${o.query ? ` AND (${o.query})` : ''}`;
        const listing = client.workflow.list({ query, pageSize: Math.min(o.limit, 100) });
        try {
          for await (const w of listing) {
            rows.push(handoffRow(w));
            if (rows.length >= o.limit) break;
          }
        } catch (err) {
          // The server names what it could not parse (an unknown attribute, a bad operator): gRPC INVALID_ARGUMENT.
          const cause = (err as Error).cause as (Error & { code?: number }) | undefined;
          if (o.query && cause?.code === 3) throw new CliError(`--query ${JSON.stringify(o.query)}: ${cause.message}`, EXIT.REJECTED);
          throw err;
        }
        if (o.json) console.log(JSON.stringify({ handoffs: rows }));
        else if (rows.length === 0) console.log(o.running ? 'no handoff in flight' : 'no handoffs');
        else for (const r of rows) console.log(`${r.startedAt}  ${r.status.padEnd(10)} ${r.vmId ?? '?'} ${r.source ?? '?'} → ${r.target ?? '?'}${r.outcome ? `  ${r.outcome}` : ''}${r.downtimeMs !== undefined ? ` ${r.downtimeMs} ms down` : ''}  (${r.workflowId})`);
      } finally {
        await close();
      }
    });
}

function handoffRow(w: WorkflowExecutionInfo): HandoffRow {
  const memo = (w.memo ?? {}) as { vmId?: string; source?: string; target?: string };
  const sa = w.typedSearchAttributes;
  const phase = sa.get(PhaseSearchAttribute);
  const outcome = sa.get(OutcomeSearchAttribute);
  const downtimeMs = sa.get(DowntimeMsSearchAttribute);
  const trigger = sa.get(TriggerSearchAttribute);
  return {
    workflowId: w.workflowId, status: w.status.name,
    ...(memo.vmId ? { vmId: memo.vmId } : {}), ...(memo.source ? { source: memo.source } : {}), ...(memo.target ? { target: memo.target } : {}),
    startedAt: w.startTime.toISOString(), ...(w.closeTime ? { closedAt: w.closeTime.toISOString() } : {}),
    ...(phase !== undefined ? { phase } : {}), ...(outcome !== undefined ? { outcome } : {}),
    ...(downtimeMs !== undefined ? { downtimeMs } : {}), ...(trigger !== undefined ? { trigger } : {}),
  };
}
