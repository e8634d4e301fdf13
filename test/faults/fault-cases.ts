import { access, open, readFile, readdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { HOST_CONTINUED_FILE } from '../../engine/host/host-protocol.js';
import { FILE_NAMES } from '../../engine/image/base-image.js';
import { DATA_IDLE_TIMEOUT_MS } from '../../engine/wire/overlay-sender.js';
import { WorkflowFailedError } from '@temporalio/client';
import { WORKFLOW_TASK_QUEUE } from '../../workflows/definitions.js';
import { handoff } from '../../workflows/handoff.js';
import type { CaseContext, CaseResult, FaultCase } from './fault-suite.js';
import type { HandoffResult } from '../../workflows/definitions.js';
import { runCrashCase } from './crash-case.js';
import { fillTmpfs } from './tmpfs-mount.js';

/** The file the "/dev/shm full" case fills B's RAM folder with, until it removes it. */
let shmFiller: string | undefined;

/** Kills (or stops) a cloudlet's worker; the cluster starts it again after its restart delay. */
async function crashWorker(ctx: CaseContext, cloudlet: string, signal: NodeJS.Signals): Promise<void> {
  const worker = ctx.cluster.workers.get(cloudlet)!;
  const back = worker.nextReady();
  ctx.log(`  ${signal} → worker ${cloudlet} (pid ${worker.pid})`);
  worker.signal(signal);
  await back;
  ctx.log(`  worker ${cloudlet} is back (pid ${worker.pid})`);
}

/**
 * The issue's bound for a resumed handoff: at most 10% of a clean run's bytes sent again, plus
 * what reconciling with the target costs (allowed here: 1 MB). Measured only with a clean case in
 * the same run.
 */
async function resentWithinBound(_ctx: CaseContext, r: Omit<CaseResult, 'passed' | 'failures'>): Promise<string[]> {
  if (r.bytesResent === null || r.bytesFirstAttempt === null) return [];
  const bound = 0.1 * r.bytesFirstAttempt + 1e6;
  return r.bytesResent <= bound ? [] : [`${(r.bytesResent / 1e6).toFixed(1)} MB sent again, over the bound of ${(bound / 1e6).toFixed(1)} MB (10% of the clean run's ${(r.bytesFirstAttempt / 1e6).toFixed(1)} MB + 1 MB)`];
}

/** Every case of the issue's table that this build injects, in the order they run. */
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
    check: resentWithinBound,
    inject: async (ctx) => {
      await ctx.workflowStep('stream', 8_000);
      await crashWorker(ctx, 'A', 'SIGKILL');
    },
  },
  {
    fault: 'kill -9 source worker, restarted after 5 s',
    step: 'stopped phase',
    expected: ['moved'],
    check: resentWithinBound,
    inject: async (ctx) => {
      await ctx.sourcePhase('stopped');
      await crashWorker(ctx, 'A', 'SIGKILL');
    },
  },
  {
    fault: 'kill -9 target worker, restarted after 5 s',
    step: 'live epoch ≥ 1',
    expected: ['moved'],
    check: resentWithinBound,
    inject: async (ctx) => {
      await ctx.workflowStep('stream', 8_000);
      await crashWorker(ctx, 'B', 'SIGKILL');
    },
  },
  {
    fault: 'a peer that stops answering (no RST)',
    step: 'stopped phase, before the end frame',
    // The source notices the silence (DATA_IDLE_TIMEOUT_MS) and resumes on its own — its end
    // and commit frames wait for an ack from the target after the pause, which a target frozen
    // at the pause never sends — so its guest's longest silence is that bound, plus the scan and
    // the pause, not the 45 s of the fault.
    // The attempt fails cleanly; once the target answers again, a retried attempt may carry the
    // handoff on from what the target holds and move the VM after all.
    expected: ['stayed-at-source', 'moved'],
    check: async (ctx) => {
      const silent = ctx.monitor.longestSilenceMs('A');
      ctx.log(`    the guest at A was silent at most ${(silent / 1000).toFixed(1)} s (bound ${(DATA_IDLE_TIMEOUT_MS + 5_000) / 1000} s)`);
      return silent <= DATA_IDLE_TIMEOUT_MS + 5_000 ? [] : [`the guest at A was silent ${(silent / 1000).toFixed(1)} s, over the ${DATA_IDLE_TIMEOUT_MS / 1000} s bound + 5 s`];
    },
    inject: async (ctx) => {
      await ctx.sourcePhase('stopped');
      const worker = ctx.cluster.workers.get('B')!;
      ctx.log(`  SIGSTOP → worker B (pid ${worker.pid}) for 45 s`);
      worker.signal('SIGSTOP');
      await sleep(45_000);
      worker.signal('SIGCONT');
    },
  },
  ...(['live stream', 'stopped phase'] as const).map(
    (step): FaultCase => ({
      fault: 'Temporal dev server restarted (down 20 s)',
      step,
      expected: ['moved'],
      inject: async (ctx) => {
        if (step === 'live stream') await ctx.workflowStep('stream', 6_000);
        else await ctx.sourcePhase('stopped');
        await ctx.cluster.restartServer(20_000);
      },
    }),
  ),
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
  {
    fault: 'target link lost right after its cont',
    step: 'commit',
    expected: ['moved', 'moved-after-commit-fault'],
    inject: async (ctx) => {
      // The target's host writes this before it continues the VM (HOST_CONTINUED_FILE).
      const marker = join(ctx.runDir('B'), 'vms', ctx.vmId, HOST_CONTINUED_FILE);
      while (!(await access(marker).then(() => true, () => false))) await sleep(5);
      ctx.log("  B continued the VM: B's link cut for 30 s");
      await ctx.cluster.wan!.blackout('B', true);
      await sleep(30_000);
      await ctx.cluster.wan!.blackout('B', false);
    },
  },
  {
    fault: "30 s blackout of A's link (data plane and Temporal)",
    step: 'after the end frame left',
    expected: ['moved', 'moved-after-commit-fault'],
    inject: async (ctx) => {
      // Recorded just before the end and commit frames are handed to the link.
      await ctx.sourcePhase('commit-sent');
      ctx.log("  end and commit frames leaving: A's link cut for 30 s");
      await ctx.cluster.wan!.blackout('A', true);
      await sleep(30_000);
      await ctx.cluster.wan!.blackout('A', false);
    },
  },
  {
    fault: 'target cannot run the VM: QEMU fails to start',
    step: 'prepare',
    expected: ['stayed-at-source'],
    inject: async (ctx) => {
      // Without its kernel, B's QEMU for the incoming copy exits at once.
      const kernel = join(ctx.baseImageDir('B'), FILE_NAMES.kernel);
      await rename(kernel, `${kernel}.away`);
      try {
        await ctx.sourcePhase('live', 60_000).catch(() => undefined);
        await sleep(3_000);
      } finally {
        await rename(`${kernel}.away`, kernel);
      }
    },
    check: async (_ctx, r) => (/QEMU|kernel/i.test(r.detail) ? [] : [`the failure does not name the cause: ${r.detail}`]),
  },
  {
    fault: 'target cannot run the VM: /dev/shm full',
    step: 'prepare',
    expected: ['stayed-at-source'],
    // B's tmpfs for RAM files (its own, see run-faults) filled but 64 MiB before the handoff: the
    // incoming copy's 512 MiB RAM file cannot be laid out. The bystander's is allocated already.
    before: async (ctx) => {
      if (ctx.ramDir('B') === '/dev/shm') throw new Error("this case fills B's RAM folder: B needs a tmpfs of its own (run it through npm run test:faults)");
      shmFiller = await fillTmpfs(ctx.ramDir('B'), 64);
      ctx.log(`  filled ${ctx.ramDir('B')} but 64 MiB`);
    },
    inject: async (ctx) => {
      try {
        await ctx.workflowStep('stream', 0, 30_000).catch(() => undefined);
      } finally {
        if (shmFiller) await rm(shmFiller, { force: true });
        shmFiller = undefined;
      }
    },
    check: async (_ctx, r) => (/no space left|ENOSPC/i.test(r.detail) ? [] : [`the failure does not name the cause: ${r.detail}`]),
  },
  {
    fault: 'target cannot run the VM: one byte flipped',
    step: 'finalize',
    expected: ['stayed-at-source'],
    inject: async (ctx) => {
      // A byte of B's assembled RAM changed behind the target's back (a bad DIMM, a stray write):
      // its digest at the stop must catch it. The byte is in the guest kernel's version banner
      // (read-only data, as in the base image): no frame of the source rewrites it, so the flip
      // stays until the check.
      await ctx.workflowStep('stream', 6_000);
      const [ramFile] = (await readdir(ctx.ramDir('B'))).filter((f) => f.startsWith(`ehoff-B-${ctx.vmId}-`));
      if (!ramFile) throw new Error('no RAM file of the incoming copy at B');
      const banner = (await readFile(join(ctx.baseImageDir('B'), FILE_NAMES.memory))).indexOf('Linux version ');
      if (banner < 0) throw new Error("no kernel banner in the base image's memory");
      const ram = await open(join(ctx.ramDir('B'), ramFile), 'r+');
      const byte = Buffer.alloc(1);
      await ram.read(byte, 0, 1, banner);
      byte[0]! ^= 0xff;
      await ram.write(byte, 0, 1, banner);
      await ram.close();
    },
    check: async (_ctx, r) => (/STATE_MISMATCH|do not match/.test(r.detail) ? [] : [`the failure does not name the mismatch: ${r.detail}`]),
  },
  ...(['snapshot', 'negotiate', 'stream', 'stopped phase', 'finalize (the end frame left)'] as const).map(
    (step): FaultCase => ({
      fault: 'operator cancel',
      step,
      // Cancelled once the target may have committed, the VM stays where it then runs (or the
      // handoff ended before the cancel arrived).
      expected: step.startsWith('finalize') ? ['stayed-at-source', 'moved-after-commit-fault', 'moved'] : ['stayed-at-source'],
      inject: async (ctx) => {
        if (step === 'stopped phase') await ctx.sourcePhase('stopped');
        else if (step.startsWith('finalize')) await ctx.sourcePhase('commit-sent');
        else if (step !== 'snapshot') await ctx.workflowStep(step, step === 'stream' ? 5_000 : 0);
        await ctx.handle!.cancel().catch(() => undefined);
      },
    }),
  ),
  {
    fault: 'two handoffs of one VM (A→B and A→C, different workflow ids)',
    step: 'within 100 ms',
    expected: ['moved'],
    inject: async (ctx) => {
      await sleep(50);
      const second = await ctx.cluster.client.workflow.start(handoff, {
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

/**
 * Post-copy's cases: a guest that rewrites two 32 MiB grids as fast as it runs outruns the 10
 * Mbit/s link, so with post-copy allowed the handoff switches; it also syncs 64 KiB/s of
 * checkpoint lines to its disk, so disk blocks are left stale too. The fault strikes while the
 * target runs the VM on pages and blocks still coming from A's stopped copy. Nothing may be lost:
 * the VM moves, its whole memory confirmed, and A's copy goes only then.
 */
const POST_COPY = { workload: { name: 'fluid', args: ['32', '50', '64'] }, input: { postCopy: 'auto' as const }, expected: ['moved' as const] };

/** Cases whose fault struck while the target was still fetching pages, by VM. */
const struckMidPostCopy = new Set<string>();

/**
 * Once B runs the VM on a post-copy (its host wrote the continued file, its record says it still
 * fetches): the fault, counted as struck mid post-copy only if the fetch was still under way
 * right before it and the fault itself went through.
 */
async function midPostCopy(ctx: CaseContext, fault: () => Promise<void>): Promise<void> {
  await ctx.postCopyFetching();
  const continued = join(ctx.runDir('B'), 'vms', ctx.vmId, HOST_CONTINUED_FILE);
  while (!(await access(continued).then(() => true, () => false))) await sleep(5);
  await sleep(500);
  const fetching = await ctx.postCopyStillFetching();
  await fault();
  if (fetching) struckMidPostCopy.add(ctx.vmId);
}

/** The fault struck mid post-copy, the handoff went by post-copy, and the source confirmed the whole memory before its copy went. */
async function wentByPostCopy(ctx: CaseContext): Promise<string[]> {
  const r = (await ctx.handle!.result().catch(() => undefined)) as HandoffResult | undefined;
  if (!struckMidPostCopy.has(ctx.vmId)) return ['the fault did not strike while the target was still fetching pages'];
  if (!r) return [];
  ctx.log(`    post-copy: ${r.postCopy ? `${r.postCopy.stalePages} stale pages and ${r.postCopy.fetch.diskBlocks ?? 0} disk blocks, ${r.postCopy.fetch.remoteFaults} remote faults (median ${r.postCopy.fetch.faultLatencyMedianMs} ms, max ${r.postCopy.fetch.faultLatencyMaxMs} ms), ${r.postCopy.fetch.reconnects} reconnects, ${(r.postCopy.fetch.ms / 1000).toFixed(1)} s` : 'none'}; downtime ${r.downtimeMs} ms (${r.downtimeBreakdown.map((d) => `${d.step} ${d.ms}`).join(', ')})`);
  if (!r.postCopy?.memoryDigestConfirmed) return [`the handoff did not go by post-copy with its whole memory confirmed (${JSON.stringify(r.postCopy)})`];
  return (r.postCopy.fetch.diskBlocks ?? 0) > 0 ? [] : ['no disk blocks were left to fetch: the case did not try the disk post-copy'];
}

FAULT_CASES.push(
  {
    ...POST_COPY,
    fault: "20 s blackout of A's link (data plane and Temporal)",
    step: 'post-copy',
    check: wentByPostCopy,
    inject: (ctx) =>
      midPostCopy(ctx, async () => {
        ctx.log("  the target runs on A's pages: A's link cut for 20 s");
        await ctx.cluster.wan!.blackout('A', true);
        await sleep(20_000);
        await ctx.cluster.wan!.blackout('A', false);
      }),
  },
  {
    ...POST_COPY,
    fault: 'kill -9 target worker, restarted after 5 s',
    step: 'post-copy',
    check: wentByPostCopy,
    inject: (ctx) => midPostCopy(ctx, () => crashWorker(ctx, 'B', 'SIGKILL')),
  },
  {
    ...POST_COPY,
    fault: 'kill -9 source worker, restarted after 5 s',
    step: 'post-copy',
    check: wentByPostCopy,
    inject: (ctx) => midPostCopy(ctx, () => crashWorker(ctx, 'A', 'SIGKILL')),
  },
);

FAULT_CASES.push({
  fault: 'the test parent and workers killed -9 mid-handoff',
  step: 'stream',
  expected: ['vm-lost'],
  inject: async () => undefined,
  standalone: runCrashCase,
});
