import { Context } from '@temporalio/activity';
import type { StreamControl } from '../engine/handoff/stream-control.js';
import { reportMeasurementsSignal, streamControlQuery, type StreamControlState } from '../workflows/definitions.js';

const POLL_EVERY_MS = 500;

/**
 * The stream's steering wheel held by the workflow: measurements go up as signals, the decided
 * mode and bandwidth cap come back through a query polled every half second.
 */
export async function workflowStreamControl(): Promise<StreamControl & { stop(): void }> {
  const ctx = Context.current();
  const execution = ctx.info.workflowExecution;
  if (!execution) throw new Error('the stream must run as an activity of a workflow (no workflow execution in its context)');
  const handle = ctx.client.workflow.getHandle(execution.workflowId, execution.runId);
  let state: StreamControlState = await handle.query(streamControlQuery);
  let polling = false;
  const poll = setInterval(() => {
    if (polling) return;
    polling = true;
    handle
      .query(streamControlQuery)
      .then((s) => (state = s), (err: unknown) => ctx.log.warn('stream control query failed', { error: String(err) }))
      .finally(() => (polling = false));
  }, POLL_EVERY_MS);
  return {
    mode: () => state.mode,
    bandwidthCapMbps: () => state.bandwidthCapMbps,
    report: (m) => {
      handle.signal(reportMeasurementsSignal, m).catch((err: unknown) => ctx.log.warn('measurement signal failed', { error: String(err) }));
    },
    stop: () => clearInterval(poll),
  };
}
