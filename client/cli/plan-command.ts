import type { Command } from 'commander';
import type { Client } from '@temporalio/client';
import type { CloudletState, VmMeasurement } from '../../activities/cloudlet-activities.js';
import { describeCloudlets, measureVm } from '../../workflows/vm-lifecycle.js';
import { forecastHandoff, type HandoffForecast } from '../../engine/placement/forecast-handoff.js';
import { loadSiteTopology } from '../../engine/placement/load-site-topology.js';
import { vmIdSchema, cloudletNameSchema } from '../../engine/names.js';
import { SITE_TOPOLOGY_FILE } from '../../infra/paths.js';
import { BLOCK_SIZE } from '../../engine/blocks.js';
import { DEFAULT_PRECOPY } from '../../engine/handoff/precopy-policy.js';
import { whereRuns } from '../../engine/placement/site-view.js';
import type { HandoffResult } from '../../workflows/definitions.js';
import { executeWorkflow } from '../execute-workflow.js';
import { connect, type TemporalTarget } from './connect.js';
import { CliError, EXIT } from './exit-codes.js';

/**
 * The downtime the forecast's stop must fit: the handoff's 1 s target. The engine's own rule
 * (DEFAULT_PRECOPY.downtimeBudgetMs, 300 ms) bounds the stopped epoch's send time alone; the
 * forecast adds the stop's measured overhead and compares the sum with this.
 */
const DOWNTIME_BUDGET_MS = 1_000;
/** Without a past handoff on the link: the steps around the stream and the stop's own cost, as measured on loopback. */
const DEFAULT_STEPS_S = 3;
const DEFAULT_STOP_MS = 300;

/** What the last completed handoff on a link tells about it. */
interface LinkHistory {
  workflowId: string;
  linkBytesPerS: number;
  stepsOverheadS: number;
  stopOverheadMs: number;
}

export interface HandoffPlan {
  vmId: string;
  source: string;
  target: string;
  targetHoldsBase: boolean;
  measured: VmMeasurement;
  link: { mbps: number; from: string; stepsOverheadS: number; stopOverheadMs: number };
  forecast: HandoffForecast;
}

/** `plan`: before anything moves, what a handoff would send, take and pause. */
export function planCommand(program: Command, globals: () => TemporalTarget): void {
  program
    .command('plan')
    .description("predict a handoff before anything moves: overlay, total time and downtime from the VM's measured dirty rate and the link's measured rate")
    .requiredOption('--vm <id>', 'the VM')
    .requiredOption('--to <cloudlet>', 'where it would go')
    .option('--mbps <rate>', "the link's rate, if no handoff between the two cloudlets measured it yet", Number)
    .option('--window-ms <ms>', 'how long to watch the guest dirty its memory', Number, 3000)
    .option('--json', 'print the plan as one JSON line')
    .action(async (o: { vm: string; to: string; mbps?: number; windowMs: number; json?: boolean }) => {
      const vmId = vmIdSchema.safeParse(o.vm);
      const to = cloudletNameSchema.safeParse(o.to);
      if (!vmId.success) throw new CliError(`--vm '${o.vm}': ${vmId.error.issues[0]?.message}`, EXIT.REJECTED);
      if (!to.success) throw new CliError(`--to '${o.to}': ${to.error.issues[0]?.message}`, EXIT.REJECTED);
      if (o.mbps !== undefined && !(o.mbps > 0)) throw new CliError(`--mbps must be a rate above 0, got ${o.mbps}`, EXIT.REJECTED);
      if (!(o.windowMs >= 200 && o.windowMs <= 60_000)) throw new CliError(`--window-ms must be between 200 and 60000, got ${o.windowMs}`, EXIT.REJECTED);
      const names = (await loadSiteTopology(SITE_TOPOLOGY_FILE)).cloudlets.map((c) => c.name);
      const { client, close } = await connect(globals());
      try {
        const plan = await planHandoff(client, vmId.data, to.data, names, o.windowMs, o.mbps);
        if (o.json) console.log(JSON.stringify(plan));
        else for (const line of describePlan(plan)) console.log(line);
      } finally {
        await close();
      }
    });
}

export async function planHandoff(client: Client, vmId: string, target: string, cloudlets: string[], windowMs: number, mbps?: number): Promise<HandoffPlan> {
  const states = await executeWorkflow(client, describeCloudlets, { cloudlets: [...new Set([...cloudlets, target])] });
  const at = whereRuns(states, vmId);
  if (at?.runState !== 'running') throw new CliError(`VM '${vmId}' runs on no cloudlet of ${Object.keys(states).join(', ')}`, EXIT.REJECTED);
  const source = at.cloudlet;
  if (source === target) throw new CliError(`VM '${vmId}' runs on ${target} already`, EXIT.REJECTED);
  const targetState = states[target];
  if (!targetState) throw new CliError(`cloudlet ${target} does not answer: its worker is offline`, EXIT.REJECTED);
  const measured = await executeWorkflow(client, measureVm, { vmId, cloudlet: source, windowMs });
  const history = await lastHandoffOnLink(client, source, target, measured.wireRatio);
  if (!history && mbps === undefined) throw new CliError(`no handoff ${source} → ${target} has measured that link yet: give its rate with --mbps`, EXIT.REJECTED);
  const linkBytesPerS = mbps !== undefined ? (mbps * 1e6) / 8 : history!.linkBytesPerS;
  const link = {
    mbps: (linkBytesPerS * 8) / 1e6,
    from: mbps !== undefined ? '--mbps' : `handoff ${history!.workflowId}`,
    stepsOverheadS: history?.stepsOverheadS ?? DEFAULT_STEPS_S,
    stopOverheadMs: history?.stopOverheadMs ?? DEFAULT_STOP_MS,
  };
  const forecast = forecastHandoff({
    overlayBytes: measured.overlayBytes,
    dirtyBytesPerS: measured.dirtyBytesPerS,
    workingSetBytes: measured.workingSetBytes,
    wireRatio: measured.wireRatio,
    linkBytesPerS,
    memoryBytes: measured.memoryBytes,
    stopOverheadMs: link.stopOverheadMs,
    stepsOverheadS: link.stepsOverheadS,
    downtimeBudgetMs: DOWNTIME_BUDGET_MS,
    maxLiveEpochs: DEFAULT_PRECOPY.maxLiveEpochs,
  });
  return { vmId, source, target, targetHoldsBase: targetState.baseImages.includes(at.baseImageId), measured, link, forecast };
}

/**
 * The newest completed handoff from `source` to `target`: its stream's bytes over its epochs'
 * time is the link's rate as a handoff sees it; the rest of its time, the steps around the stream.
 */
async function lastHandoffOnLink(client: Client, source: string, target: string, wireRatio: number): Promise<LinkHistory | undefined> {
  let newest: { workflowId: string; runId: string; closedAt: number } | undefined;
  for await (const w of client.workflow.list({ query: `WorkflowType = 'handoff' AND ExecutionStatus = 'Completed'`, pageSize: 200 })) {
    if (w.memo?.source !== source || w.memo?.target !== target) continue;
    const closedAt = w.closeTime?.getTime() ?? 0;
    if (!newest || closedAt > newest.closedAt) newest = { workflowId: w.workflowId, runId: w.runId, closedAt };
  }
  if (!newest) return undefined;
  const r: HandoffResult = await client.workflow.getHandle(newest.workflowId, newest.runId).result();
  const streamMs = r.epochs.reduce((n, e) => n + e.ms, 0);
  if (streamMs <= 0 || r.bytesSent <= 0) return undefined;
  const linkBytesPerS = r.bytesSent / (streamMs / 1000);
  const stopped = r.epochs.find((e) => !e.live);
  const stopSendMs = stopped ? (((stopped.memoryPages + stopped.diskBlocks) * BLOCK_SIZE * wireRatio) / linkBytesPerS) * 1000 : 0;
  return {
    workflowId: `${newest.workflowId}/${newest.runId}`,
    linkBytesPerS,
    stepsOverheadS: Math.max(0, (r.totalMs - streamMs) / 1000),
    stopOverheadMs: Math.max(0, r.downtimeMs - stopSendMs),
  };
}

function describePlan(p: HandoffPlan): string[] {
  const mb = (b: number) => `${(b / 1e6).toFixed(1)} MB`;
  const f = p.forecast;
  return [
    `plan: ${p.vmId} ${p.source} → ${p.target} (nothing moved)`,
    `  overlay now  ${mb(p.measured.overlayBytes)} raw (${p.measured.memoryPagesChanged} RAM pages differ from the base, ${p.measured.diskBlocksWritten} disk blocks written); ${p.measured.wireMode} sends ${(p.measured.wireRatio * 100).toFixed(0)}% of it`,
    `  dirty rate   ${mb(p.measured.dirtyBytesPerS)}/s at first, ${p.measured.workingSetBytes === null ? 'no working set seen' : `saturating at a working set of ${mb(p.measured.workingSetBytes)}`} (over ${(p.measured.windowMs / 1000).toFixed(1)} s)`,
    `  link         ${p.link.mbps.toFixed(1)} Mbit/s (from ${p.link.from}); steps around the stream ${p.link.stepsOverheadS.toFixed(1)} s, stop overhead ${Math.round(p.link.stopOverheadMs)} ms`,
    `  base image   ${p.targetHoldsBase ? `${p.target} holds it` : `${p.target} LACKS it: the handoff would fetch it from ${p.source} first (not in the forecast)`}`,
    `  forecast     ${mb(f.wireBytes)} on the wire, ${f.totalS.toFixed(1)} s in all, downtime ${Math.round(f.downtimeMs)} ms, ${f.liveEpochs} live epoch(s), ${f.converges ? 'converges' : 'does NOT converge'}: ${f.reason}`,
  ];
}
