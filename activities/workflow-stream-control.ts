import { Context } from '@temporalio/activity';
import { chooseMode } from '../engine/adaptation/choose-mode.js';
import type { StreamMeasurements } from '../engine/adaptation/measurements.js';
import type { StreamControl } from '../engine/handoff/stream-control.js';
import { precopyDecisionSignal, reportMeasurementsSignal, streamControlQuery, type StreamControlState } from '../workflows/definitions.js';

const POLL_EVERY_MS = 500;
/** A proposed switch the workflow has not taken yet is not proposed again sooner than this. */
const PROPOSE_AGAIN_MS = 3_000;

/**
 * The stream's steering wheel held by the workflow. The decided mode and bandwidth cap come back
 * through a query polled every half second. Measurements (every second) stay here — the latest
 * rides in the activity's heartbeats, what `ehoff watch` and the UI's pending activity show — and
 * go to the workflow as a signal only when they would change its decision: the history records
 * decisions and their figures, not every sample. Pre-copy decisions go up as they are taken.
 */
export async function workflowStreamControl(): Promise<StreamControl & { stop(): void; latest(): StreamMeasurements | null }> {
  const ctx = Context.current();
  const execution = ctx.info.workflowExecution;
  if (!execution) throw new Error('the stream must run as an activity of a workflow (no workflow execution in its context)');
  const handle = ctx.client.workflow.getHandle(execution.workflowId, execution.runId);
  let state: StreamControlState = await handle.query(streamControlQuery);
  let latest: StreamMeasurements | null = null;
  let proposed: { mode: string; atMs: number } | null = null;
  let polling = false;
  const poll = setInterval(() => {
    if (polling) return;
    polling = true;
    handle
      .query(streamControlQuery)
      .then((s) => (state = s), (err: unknown) => ctx.log.warn('stream control query failed', { error: String(err) }))
      .finally(() => (polling = false));
  }, POLL_EVERY_MS);
  const signal = (name: string, send: () => Promise<void>) =>
    send().catch((err: unknown) => ctx.log.warn(`${name} signal failed`, { error: String(err) }));
  return {
    mode: () => state.mode,
    bandwidthCapMbps: () => state.bandwidthCapMbps,
    pinned: () => state.pinnedMode !== null,
    report: (m) => {
      latest = m;
      // The workflow's own rule, run here first: only a sample that would switch is sent, and the
      // workflow decides again on it (its dwell on its own clock).
      const heldMs = state.modeSinceMs === null ? Infinity : Date.now() - state.modeSinceMs;
      const d = chooseMode(m, state, state.mode, heldMs);
      if (d.mode === state.mode) return;
      if (proposed?.mode === d.mode && Date.now() - proposed.atMs < PROPOSE_AGAIN_MS) return;
      proposed = { mode: d.mode, atMs: Date.now() };
      signal('measurement', () => handle.signal(reportMeasurementsSignal, m));
    },
    decided: (d) => signal('pre-copy decision', () => handle.signal(precopyDecisionSignal, d)),
    latest: () => latest,
    stop: () => clearInterval(poll),
  };
}
