import { CancellationScope, setHandler } from '@temporalio/workflow';
import { drainProgressQuery, type DrainInput, type DrainReport, type DrainedVm } from './event-definitions.js';
import { carryOutMove, type MoveOutcome } from './move-vm.js';
import { cloudletOps, cloudletPatient } from './site-reads.js';

/** Rounds of "list the VMs still there, move them": VMs that arrive while a drain runs are moved in the next. */
const MAX_ROUNDS = 3;

/**
 * Moves every VM off a cloudlet, at most `concurrency` handoffs at once, each a child handoff
 * placed like any move; the cloudlet is marked draining meanwhile (it takes no new VMs) and the
 * mark is lifted at the end, whatever happened. Survives restarts: it is a workflow.
 */
export async function drainCloudlet(input: DrainInput): Promise<DrainReport> {
  const startedAt = Date.now();
  const report: DrainReport = { cloudlet: input.cloudlet, concurrency: input.concurrency, totalMs: 0, vms: [], left: [] };
  setHandler(drainProgressQuery, () => ({ ...report, totalMs: Date.now() - startedAt }));
  const on = cloudletOps(input.cloudlet);
  await on.setDraining({ draining: true });
  try {
    const tried = new Set<string>();
    for (let round = 0; round < MAX_ROUNDS; round++) {
      const todo = (await on.cloudletState({})).vms.map((v) => v.vmId).filter((id) => !tried.has(id));
      if (todo.length === 0) break;
      for (const id of todo) tried.add(id);
      await inParallel(todo, input.concurrency, async (vmId) => {
        const t = Date.now();
        // One VM's failure is its own line in the report, not the drain's end.
        const outcome = await carryOutMove({ vmId, offCloudlet: input.cloudlet, trigger: input.trigger, policy: input.policy }, () => undefined).catch(
          (err: Error): MoveOutcome => ({ answer: { outcome: 'refused', workflowIds: [], reason: `could not be carried out: ${err.message}` }, ends: [] }),
        );
        const last = outcome.ends[outcome.ends.length - 1];
        report.vms.push({
          vmId,
          outcome: outcome.answer.outcome as DrainedVm['outcome'],
          workflowIds: outcome.answer.workflowIds,
          moved: last?.ok === true && outcome.answer.outcome !== 'refused',
          ms: Date.now() - t,
          summary: last?.summary ?? outcome.answer.reason ?? '',
        });
      });
    }
    report.left = (await on.cloudletState({})).vms.map((v) => v.vmId);
  } finally {
    // Tried until the cloudlet's worker takes it: a mark left behind would keep it refusing VMs.
    await CancellationScope.nonCancellable(() => cloudletPatient(input.cloudlet).setDraining({ draining: false }));
  }
  report.totalMs = Date.now() - startedAt;
  return report;
}

/** Runs `work` over `items`, at most `limit` at once. */
async function inParallel<T>(items: T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  const queue = [...items];
  const lane = async () => {
    for (let item = queue.shift(); item !== undefined; item = queue.shift()) await work(item);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
}
