import type { Command } from 'commander';
import { WorkflowNotFoundError, type Client, type WorkflowExecutionDescription, type WorkflowHandle } from '@temporalio/client';
import { defaultPayloadConverter, type Payload } from '@temporalio/common';
import type { StreamProgress } from '../../activities/source-activities.js';
import type { StreamMeasurements } from '../../engine/adaptation/measurements.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { BLOCK_SIZE } from '../../engine/blocks.js';
import { progressQuery, streamControlQuery, streamMeasurementsQuery } from '../../workflows/definitions.js';
import { handoffWorkflowId } from '../start-handoff.js';
import { connect, type TemporalTarget } from './connect.js';
import { CliError, EXIT } from './exit-codes.js';

/** One second of `watch --json`. */
export interface WatchSample {
  at: string;
  workflowId: string;
  step: string;
  mode: string;
  pinnedMode: string | null;
  capMbps: number | null;
  /** The link's throughput as the stream measures it, Mbit/s; null before the first acknowledgements. */
  linkMbps: number | null;
  /** Guest bytes through the pipeline so far, and what they became on the wire. */
  inputBytes: number | null;
  wireBytes: number | null;
  /** Seconds since the stream (this attempt) started. */
  streamSeconds: number | null;
  /** The pre-copy epoch being sent (virsh domjobinfo's iteration), and whether the guest runs meanwhile. */
  epoch: number | null;
  live: boolean | null;
  /** What is left of this epoch, on the wire at the compression so far; null for the stopped epoch (found as it is scanned). */
  toSendBytes: number | null;
  /** The guest's dirty rate (bytes per second while the last epoch was sent) against the link's, Mbit/s both. */
  dirtyMbps: number | null;
  /** The current mode's processing throughput P (input MB/s) and its ratio r; R is linkMbps. */
  P_MBps: number | null;
  ratio: number | null;
  /** The stop rule's estimate of the downtime if the VM stopped now. */
  predictedDowntimeMs: number | null;
  /** This epoch's remainder over the link, plus the predicted stop: the least time left. */
  epochSecondsLeft: number | null;
}

/** `watch`: a live view of one VM's handoff, one sample a second, until it ends. */
export function watchCommand(program: Command, globals: () => TemporalTarget): void {
  program
    .command('watch')
    .description("follow a VM's handoff as it runs: step, epoch, bytes sent and left, dirty rate against the link, mode with P and r, predicted downtime, time left; exits with the handoff's outcome")
    .requiredOption('--vm <id>', 'the VM whose handoff to follow')
    .option('--wait <seconds>', 'how long to wait for a handoff of the VM to start', Number, 10)
    .option('--json', 'one JSON object a second, and {"done": true, "status"} at the end')
    .action(async (o: { vm: string; wait: number; json?: boolean }) => {
      const { client, close } = await connect(globals());
      try {
        const handle = await started(client, handoffWorkflowId(o.vm), o.wait);
        const tty = !o.json && process.stdout.isTTY;
        for (;;) {
          const d = await handle.describe();
          if (d.status.name !== 'RUNNING') {
            if (tty) process.stdout.write('\n');
            console.log(o.json ? JSON.stringify({ done: true, workflowId: d.workflowId, status: d.status.name }) : `handoff ${d.workflowId}: ${d.status.name}`);
            if (d.status.name !== 'COMPLETED') throw new CliError(`handoff ${d.workflowId} ended ${d.status.name}; see \`ehoff status --vm ${o.vm}\` for where the VM runs`, EXIT.FAILED_AFTER_COMMIT);
            return;
          }
          const s = await sample(handle, d);
          if (s) {
            if (o.json) console.log(JSON.stringify(s));
            else if (tty) process.stdout.write(`\r\x1b[K${line(s)}`);
            else console.log(line(s));
          }
          await sleep(1_000);
        }
      } finally {
        await close();
      }
    });
}

async function started(client: Client, workflowId: string, waitSeconds: number): Promise<WorkflowHandle> {
  const handle = client.workflow.getHandle(workflowId);
  const until = Date.now() + waitSeconds * 1000;
  for (;;) {
    const found = await handle.describe().then(() => true, (err: unknown) => {
      if (err instanceof WorkflowNotFoundError) return false;
      throw err;
    });
    if (found) return handle;
    if (Date.now() > until) throw new CliError(`no handoff ${workflowId} within ${waitSeconds} s`, EXIT.REJECTED);
    await sleep(250);
  }
}

/**
 * The stream's latest measurements: from its activity's last heartbeat (sent every second, kept by
 * the server, no history event), else what the workflow last got (a mode switch's).
 */
async function latestMeasurements(handle: WorkflowHandle, d: WorkflowExecutionDescription): Promise<StreamMeasurements | null> {
  const stream = d.raw.pendingActivities?.find((a) => a.activityType?.name === 'streamOverlay');
  const beat = stream?.heartbeatDetails?.payloads?.[0];
  const progress = beat ? defaultPayloadConverter.fromPayload<StreamProgress | undefined>(beat as Payload) : undefined;
  return progress?.measurements ?? (await handle.query(streamMeasurementsQuery));
}

/** The workflow's queries and its stream's heartbeat at one moment; undefined if it closed in between. */
async function sample(handle: WorkflowHandle, d: WorkflowExecutionDescription): Promise<WatchSample | undefined> {
  try {
    const [progress, control, m] = await Promise.all([handle.query(progressQuery), handle.query(streamControlQuery), latestMeasurements(handle, d)]);
    const p = m?.precopy;
    const wirePerInput = m && m.inputBytes > 0 ? m.wireBytes / m.inputBytes : null;
    const toSendBytes = p && p.epochChunks !== null && wirePerInput !== null ? Math.max(0, p.epochChunks - p.chunksSent) * BLOCK_SIZE * wirePerInput : null;
    const current = m?.modes.find((x) => x.mode === control.mode);
    const R = m?.R_Mbps ?? null;
    return {
      at: new Date().toISOString(), workflowId: handle.workflowId, step: progress.step,
      mode: control.mode, pinnedMode: control.pinnedMode, capMbps: control.bandwidthCapMbps,
      linkMbps: R, inputBytes: m?.inputBytes ?? null, wireBytes: m?.wireBytes ?? null, streamSeconds: m ? m.atMs / 1000 : null,
      epoch: p?.epoch ?? null,
      live: p?.live ?? null,
      toSendBytes,
      dirtyMbps: p?.dirtyBytesPerS != null ? (p.dirtyBytesPerS * 8) / 1e6 : null,
      P_MBps: current?.P_MBps ?? null,
      ratio: current?.ratio ?? null,
      predictedDowntimeMs: p?.predictedDowntimeMs ?? null,
      epochSecondsLeft: toSendBytes !== null && R ? (toSendBytes * 8) / (R * 1e6) + (p?.predictedDowntimeMs ?? 0) / 1000 : null,
    };
  } catch {
    return undefined;
  }
}

function line(s: WatchSample): string {
  const mb = (n: number | null) => (n === null ? '—' : `${(n / 1e6).toFixed(1)} MB`);
  const num = (n: number | null, digits = 1) => (n === null ? '—' : n.toFixed(digits));
  const epoch = s.epoch === null ? '' : `  epoch ${s.epoch}${s.live ? '' : ' (stopped)'}, left ${mb(s.toSendBytes)}`;
  const dirty = s.dirtyMbps === null ? '' : `  dirty ${num(s.dirtyMbps)} vs link ${num(s.linkMbps)} Mbit/s`;
  const pr = s.P_MBps === null ? '' : `  P ${num(s.P_MBps)} MB/s r ${num(s.ratio, 2)}`;
  const stop = s.predictedDowntimeMs === null ? '' : `  stop ~${s.predictedDowntimeMs} ms`;
  const left = s.epochSecondsLeft === null ? '' : `  ≥${num(s.epochSecondsLeft, 0)} s left`;
  return `${s.step.padEnd(9)} mode ${s.mode}${s.pinnedMode ? ' (pinned)' : ''}  link ${s.linkMbps === null ? '—' : `${s.linkMbps.toFixed(1)} Mbit/s`}${s.capMbps ? ` (cap ${s.capMbps})` : ''}  in ${mb(s.inputBytes)} → wire ${mb(s.wireBytes)}${s.streamSeconds === null ? '' : `  ${s.streamSeconds.toFixed(0)} s`}${epoch}${dirty}${pr}${stop}${left}`;
}
