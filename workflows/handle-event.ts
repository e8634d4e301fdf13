import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import { condition, setHandler, startChild, upsertMemo, workflowInfo } from '@temporalio/workflow';
import { chooseTarget } from '../engine/placement/choose-target.js';
import { candidatesFor, whereRuns } from '../engine/placement/site-view.js';
import { WORKFLOW_TASK_QUEUE, type LaunchVmInput } from './definitions.js';
import { drainWorkflowId, launchWorkflowId, type DrainInput, type DrainReport } from './event-definitions.js';
import { drainCloudlet } from './drain.js';
import { launchVm } from './vm-lifecycle.js';
import {
  EVENT_TYPES,
  admissionQuery,
  admitEventUpdate,
  eventDataSchemas,
  summarizeResult,
  type DrainData,
  type EdgeEventInput,
  type EventAdmission,
  type EventReport,
  type LaunchData,
  type OverloadedData,
  type UserMovedData,
} from './event-definitions.js';
import { vmsToRelieve } from '../engine/placement/overload.js';
import { carryOutMove, type Answer, type MoveOutcome } from './move-vm.js';
import { cloudletOps, readCloudlets, readSite, siteWaits } from './site-reads.js';

/** A drain moves this many VMs at once when its event does not say. */
const DEFAULT_DRAIN_CONCURRENCY = 2;

/**
 * One received event, carried out: its workflow id comes from the event's source and id, so this
 * runs once per event however often it is delivered. Each delivery asks `admitEvent` (sent with
 * the start, Update-with-Start); the first is answered with the decision, every later one with
 * `duplicate` and the first one's workflow ids. It stays open until what it started has ended, so
 * a late duplicate still finds it.
 */
export async function handleEvent(input: EdgeEventInput): Promise<EventReport> {
  const { workflowId } = workflowInfo();
  let admission: EventAdmission | undefined;
  let deliveries = 0;
  setHandler(admitEventUpdate, async () => {
    const first = ++deliveries === 1;
    await condition(() => admission !== undefined);
    return first ? admission! : duplicateOf(admission!, input);
  });
  setHandler(admissionQuery, () => admission ?? null);
  const answer = (a: Answer) => {
    if (admission) return;
    admission = { ...a, eventWorkflowId: workflowId };
    upsertMemo({ outcome: a.outcome, workflowIds: a.workflowIds, ...(a.reason ? { reason: a.reason } : {}) });
  };
  const trigger = `${input.type} ${input.source} ${input.id}`;
  const data = eventDataSchemas[input.type]?.safeParse(input.data);
  if (!data?.success) {
    answer({ outcome: 'refused', workflowIds: [], reason: `malformed ${input.type} data: ${data?.error.issues[0]?.message ?? 'unknown event type'}` });
    return { admission: admission!, followed: [] };
  }
  try {
    switch (input.type) {
      case EVENT_TYPES.userMoved: {
        const d = data.data as UserMovedData;
        const moved = await carryOutMove({ vmId: d.vmId, ...(d.toCloudlet ? { toCloudlet: d.toCloudlet } : {}), ...(d.near ? { near: d.near } : {}), trigger, policy: input.policy }, answer);
        return { admission: admission!, ...(moved.placement ? { placement: moved.placement } : {}), followed: moved.ends.map((e) => `${e.workflowId}: ${e.summary}`) };
      }
      case EVENT_TYPES.drain:
        return { admission: admission!, followed: await drain(data.data as DrainData, input, trigger, answer) };
      case EVENT_TYPES.overloaded: {
        const relieved = await relieve(data.data as OverloadedData, input, trigger, answer);
        return { admission: admission!, ...relieved };
      }
      case EVENT_TYPES.launch: {
        const launched = await launch(data.data as LaunchData, input, answer);
        return { admission: admission!, ...launched };
      }
      default:
        answer({ outcome: 'refused', workflowIds: [], reason: `events of type ${input.type} are not carried out yet` });
        return { admission: admission!, followed: [] };
    }
  } catch (err) {
    // Nothing was started: the sender is told why. Once something was, its failure is this workflow's.
    if (admission) throw err;
    answer({ outcome: 'refused', workflowIds: [], reason: `could not be carried out: ${(err as Error).message}` });
    return { admission: admission!, followed: [] };
  }
}

function duplicateOf(first: EventAdmission, input: EdgeEventInput): EventAdmission {
  const was = `${first.outcome}${first.reason ? ` (${first.reason})` : ''}`;
  return { ...first, outcome: 'duplicate', reason: `event ${input.id} from ${input.source} was received at ${input.receivedAt} and answered: ${was}` };
}

/** Starts the cloudlet's drain, or joins the one already running. */
async function drain(d: DrainData, input: EdgeEventInput, trigger: string, answer: (a: Answer) => void): Promise<string[]> {
  const workflowId = drainWorkflowId(d.cloudlet);
  if (!input.policy.site.cloudlets.some((c) => c.name === d.cloudlet)) {
    answer({ outcome: 'refused', workflowIds: [], reason: `the site has no cloudlet ${d.cloudlet}` });
    return [];
  }
  const drainInput: DrainInput = { cloudlet: d.cloudlet, concurrency: d.concurrency ?? DEFAULT_DRAIN_CONCURRENCY, policy: input.policy, trigger };
  try {
    const handle = await startChild(drainCloudlet, { workflowId, taskQueue: WORKFLOW_TASK_QUEUE, args: [drainInput], parentClosePolicy: 'ABANDON', memo: { trigger } });
    answer({ outcome: 'started', workflowIds: [workflowId], reason: `drain of ${d.cloudlet}, ${drainInput.concurrency} handoffs at once` });
    const report: DrainReport = await handle.result();
    return report.vms.map((v) => `${v.vmId}: ${v.moved ? 'moved' : 'not moved'} (${v.outcome} ${v.workflowIds.join(', ')}) in ${(v.ms / 1000).toFixed(1)} s: ${v.summary}`);
  } catch (err) {
    if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
    answer({ outcome: 'joined', workflowIds: [workflowId], reason: `${d.cloudlet} is already being drained` });
    return [`${workflowId}: ${(await siteWaits.awaitWorkflowEnd({ workflowId })).summary}`];
  }
}

/** Answers `refused` with the reason, for a step that then has nothing to report. */
function refuser(answer: (a: Answer) => void): (reason: string) => Omit<EventReport, 'admission'> {
  return (reason) => {
    answer({ outcome: 'refused', workflowIds: [], reason });
    return { followed: [] };
  };
}

/** Starts a VM where placement (or the event) says, from a base image that cloudlet holds. */
async function launch(d: LaunchData, input: EdgeEventInput, answer: (a: Answer) => void): Promise<Omit<EventReport, 'admission'>> {
  const baseImageId = d.baseImageId ?? input.policy.defaultBaseImageId;
  const view = await readSite(input.policy.site);
  const at = whereRuns(view.states, d.vmId);
  const refuse = refuser(answer);
  if (at) return refuse(`VM ${d.vmId} already runs on ${at.cloudlet}`);
  if (!baseImageId) return refuse('the event names no baseImageId and the site has no default base image');
  const placement = chooseTarget({ vmId: d.vmId, requireBase: true, ...(d.cloudlet ? { toCloudlet: d.cloudlet } : {}) }, candidatesFor(view, baseImageId));
  if (placement.target === null) return { ...refuse(placement.reason), placement };
  const launchInput: LaunchVmInput = { vmId: d.vmId, cloudlet: placement.target, baseImageId, workload: { name: d.workload.name, args: d.workload.args ?? [] } };
  const workflowId = launchWorkflowId(d.vmId);
  let handle;
  try {
    handle = await startChild(launchVm, { workflowId, taskQueue: WORKFLOW_TASK_QUEUE, args: [launchInput], parentClosePolicy: 'ABANDON' });
  } catch (err) {
    if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
    answer({ outcome: 'joined', workflowIds: [workflowId], reason: `${d.vmId} is already being launched` });
    return { placement, followed: [`${workflowId}: ${(await siteWaits.awaitWorkflowEnd({ workflowId })).summary}`] };
  }
  answer({ outcome: 'started', workflowIds: [workflowId], reason: placement.reason });
  try {
    return { placement, followed: [`${workflowId}: ${summarizeResult(await handle.result())}`] };
  } catch (err) {
    const e = err as Error;
    return { placement, followed: [`${workflowId}: failed: ${e.cause instanceof Error ? e.cause.message : e.message}`] };
  }
}

/**
 * An overloaded cloudlet: the VMs whose moves bring its load under the threshold for the fewest
 * bytes sent (vmsToRelieve, on each VM's measured CPU and expected overlay), each moved like any
 * move. Answered once every one of those moves has its first decision.
 */
async function relieve(d: OverloadedData, input: EdgeEventInput, trigger: string, answer: (a: Answer) => void): Promise<Omit<EventReport, 'admission'>> {
  const declared = input.policy.site.cloudlets.find((c) => c.name === d.cloudlet);
  const refuse = refuser(answer);
  if (!declared) return refuse(`the site has no cloudlet ${d.cloudlet}`);
  // Only the overloaded cloudlet's own state matters here (its drain mark); its VMs come with their CPU below.
  const state = (await readCloudlets([d.cloudlet]))[d.cloudlet];
  if (!state) return refuse(`cloudlet ${d.cloudlet} does not answer: its worker is offline`);
  // A drain moves everything off it already: relief would only race it.
  if (state.draining) return refuse(`cloudlet ${d.cloudlet} is being drained`);
  // Each VM's CPU over a window of its own (2 s), not over whatever time passed since the last read.
  const cpu = await cloudletOps(d.cloudlet).vmLoads({ windowMs: 2_000 });
  const measured = cpu.reduce((n, v) => n + (v.cpuCores ?? 0), 0) / declared.cpuCores;
  const load = d.load ?? measured;
  const estimates = await cloudletOps(d.cloudlet).overlayEstimates({});
  const vms = cpu.map((v) => ({ vmId: v.vmId, load: (v.cpuCores ?? 0) / declared.cpuCores, expectedOverlayBytes: estimates.find((e) => e.vmId === v.vmId)?.bytes ?? Number.MAX_SAFE_INTEGER }));
  const pick = vmsToRelieve(load, vms);
  if (pick.vmIds.length === 0) return refuse(`${d.cloudlet}: ${pick.reason} (measured ${Math.round(measured * 100)}%)`);
  const answers = new Map<string, Answer>();
  const moves = pick.vmIds.map((vmId) =>
    carryOutMove({ vmId, offCloudlet: d.cloudlet, trigger, policy: input.policy }, (a) => answers.set(vmId, a)).catch((err: Error): MoveOutcome => {
      const failed: Answer = { outcome: 'refused', workflowIds: [], reason: `could not be carried out: ${err.message}` };
      answers.set(vmId, failed);
      return { answer: failed, ends: [] };
    }),
  );
  await condition(() => answers.size === pick.vmIds.length);
  const all = pick.vmIds.map((id) => [id, answers.get(id)!] as const);
  const outcome = all.some(([, a]) => a.outcome === 'started') ? 'started' : all[0]![1].outcome;
  answer({
    outcome,
    workflowIds: all.flatMap(([, a]) => a.workflowIds),
    reason: `${d.cloudlet} at ${Math.round(load * 100)}%: ${pick.reason}; ${all.map(([id, a]) => `${id} ${a.outcome}${a.reason ? ` (${a.reason})` : ''}`).join('; ')}`,
  });
  const outcomes = await Promise.all(moves);
  return { ...(outcomes[0]?.placement ? { placement: outcomes[0].placement } : {}), followed: outcomes.flatMap((o) => o.ends.map((e) => `${e.workflowId}: ${e.summary}`)) };
}
