import { setTimeout as sleep } from 'node:timers/promises';
import { WorkflowFailedError } from '@temporalio/client';
import { WORKFLOW_TASK_QUEUE } from '../../workflows/definitions.js';
import type { CaseContext, FaultCase } from './fault-suite.js';

/** Kills (or stops) a cloudlet's worker; the cluster starts it again after its restart delay. */
async function crashWorker(ctx: CaseContext, cloudlet: string, signal: NodeJS.Signals): Promise<void> {
  const worker = ctx.cluster.workers.get(cloudlet)!;
  const back = worker.nextReady();
  ctx.log(`  ${signal} → worker ${cloudlet} (pid ${worker.pid})`);
  worker.signal(signal);
  await back;
  ctx.log(`  worker ${cloudlet} is back (pid ${worker.pid})`);
}

/** Every case of the table that this build injects, in the order they run. */
export const FAULT_CASES: FaultCase[] = [
  { fault: 'none', step: '-', expected: ['moved'], inject: async () => undefined },
  {
    fault: 'SIGTERM of a worker with the VM and a bystander',
    step: 'between handoffs',
    kind: 'between',
    expected: ['stayed-at-source'],
    inject: (ctx) => crashWorker(ctx, 'A', 'SIGTERM'),
  },
  {
    fault: 'kill -9 source worker, restarted after 5 s',
    step: 'live epoch ≥ 1',
    expected: ['moved'],
    inject: async (ctx) => {
      await ctx.workflowStep('stream', 8_000);
      await crashWorker(ctx, 'A', 'SIGKILL');
    },
  },
  {
    fault: 'kill -9 source worker, restarted after 5 s',
    step: 'stopped phase',
    expected: ['moved'],
    inject: async (ctx) => {
      await ctx.sourcePhase('stopped');
      await crashWorker(ctx, 'A', 'SIGKILL');
    },
  },
  {
    fault: 'kill -9 target worker, restarted after 5 s',
    step: 'live epoch ≥ 1',
    expected: ['moved'],
    inject: async (ctx) => {
      await ctx.workflowStep('stream', 8_000);
      await crashWorker(ctx, 'B', 'SIGKILL');
    },
  },
  {
    fault: 'a peer that stops answering (no RST)',
    step: 'stopped phase, before the end frame',
    expected: ['stayed-at-source'],
    inject: async (ctx) => {
      await ctx.sourcePhase('stopped');
      const worker = ctx.cluster.workers.get('B')!;
      ctx.log(`  SIGSTOP → worker B (pid ${worker.pid}) for 45 s`);
      worker.signal('SIGSTOP');
      await sleep(45_000);
      worker.signal('SIGCONT');
    },
  },
  {
    fault: "30 s blackout of A's link (data plane and Temporal)",
    step: 'live stream',
    expected: ['moved'],
    inject: async (ctx) => {
      await ctx.workflowStep('stream', 6_000);
      ctx.log("  A's link cut for 30 s");
      await ctx.cluster.wan!.blackout('A', true);
      await sleep(30_000);
      await ctx.cluster.wan!.blackout('A', false);
    },
  },
  ...(['negotiate', 'stream'] as const).map(
    (step): FaultCase => ({
      fault: 'operator cancel',
      step,
      expected: ['stayed-at-source'],
      inject: async (ctx) => {
        await ctx.workflowStep(step, step === 'stream' ? 5_000 : 0);
        await ctx.handle!.cancel();
      },
    }),
  ),
  {
    fault: 'two handoffs of one VM (A→B and A→C, different workflow ids)',
    step: 'within 100 ms',
    expected: ['moved'],
    inject: async (ctx) => {
      await sleep(50);
      const second = await ctx.cluster.client.workflow.start('handoff', {
        taskQueue: WORKFLOW_TASK_QUEUE,
        workflowId: `${ctx.workflowId}-second`,
        args: [{ vmId: ctx.vmId, source: 'A', target: 'C' }],
      });
      secondOutcome.set(ctx.vmId, await second.result().then(() => 'moved', (err: unknown) => (err instanceof WorkflowFailedError ? String(err.cause?.message) : String(err))));
    },
    check: async (ctx) => {
      const second = secondOutcome.get(ctx.vmId) ?? 'never ended';
      return /VM_BUSY|is held by handoff/.test(second) ? [] : [`the second handoff (A→C) did not fail with VM_BUSY: ${second}`];
    },
  },
];

const secondOutcome = new Map<string, string>();
