import type { StreamProfiler } from '../adaptation/stream-profiler.js';
import type { VmInstance } from '../cloudlet/vm-instance.js';
import type { ReconcileReport, SourceStopMarks, StateDigests } from '../contract.js';
import type { MemoryTracker } from '../memory/memory-tracker.js';
import { Space } from '../pipeline/chunk-records.js';
import { loadHash64 } from '../pipeline/checksum.js';
import { MAX_POST_COPY_DISK_BLOCKS, readStoppedDiskBlocks, type StoppedDiskBlocks } from '../postcopy/stopped-disk-blocks.js';
import type { CodecPool } from '../pipeline/codec-pool.js';
import type { ChunkList, EncodedBatch } from '../pipeline/overlay-encoder.js';
import { stopTrace } from '../stop-trace.js';
import type { GuestThrottle } from '../vm/guest-throttle.js';
import type { Holdings } from '../wire/holdings.js';
import type { EpochEncoder } from './epoch-encoder.js';
import type { InFlightBatches } from './in-flight-batches.js';
import type { ModeSampler } from './mode-sampler.js';
import type { PrecopyAction, PrecopyPolicy } from './precopy-policy.js';
import { MAX_CATCH_UP_EPOCHS, afterDrain, afterLiveEpoch } from './precopy-rule.js';
import { blocksTargetLacks } from './reconcile.js';
import { pauseAndStartStop, type StopWork } from './stop-work.js';
import type { StreamControl } from './stream-control.js';
import type { StreamTally } from './stream-tally.js';

/** The longest the live side waits for the link to drain before the pause. */
const DRAIN_TIMEOUT_MS = 10_000;

/** How the pre-copy ended, filled in as it goes: what the stream's result and its final frames need. */
export interface PrecopyOutcome {
  converged: boolean;
  stopReason: string;
  /** When the guest was slowed to let the epochs converge, and to what share paused. */
  guestSlowdown: Array<{ epoch: number; share: number }>;
  /** Everything the stop started at the pause (see pauseAndStartStop). */
  stopped?: StopWork;
  /** The paused state's digests, computed right after the final epoch. */
  digests?: Promise<StateDigests>;
  /**
   * Set when the stop rule chose post-copy: why; then, once the stop-time scan ran, the memory
   * pages the target holds stale (the stopped epoch sends only disk blocks), and their stopped
   * state, read on the pool while the stop goes on.
   */
  postCopy?: {
    reason: string;
    stale?: Uint32Array;
    staleSentBefore?: number;
    stopped?: Promise<{ stopHashes: BigUint64Array; memoryDigest: string }>;
    /** The disk blocks left stale too (at most MAX_POST_COPY_DISK_BLOCKS), and their stopped state. */
    staleDisk?: Uint32Array;
    diskStopped?: Promise<StoppedDiskBlocks>;
  };
}

/**
 * The pre-copy's batches, epoch by epoch: epoch 0 (everything that differs from the base, less
 * what a resumed attempt's target holds), live epochs of what changed until the stop rule says
 * stop (afterLiveEpoch, each decision to `control`), the link drained, catch-up epochs while they
 * pay (afterDrain), then the pause and the stopped epoch. `outcome` records how it ended.
 */
export async function* precopyEpochs(o: {
  vm: VmInstance;
  tracker: MemoryTracker;
  pool: CodecPool;
  encoder: EpochEncoder;
  profiler: StreamProfiler;
  tally: StreamTally;
  sampler: ModeSampler;
  inFlight: InFlightBatches;
  throttle: GuestThrottle;
  control: StreamControl;
  policy: PrecopyPolicy;
  marks: SourceStopMarks;
  startedAtMs: number;
  /** A resumed attempt's target holdings and the reconcile's report, once the target sent them. */
  resumed: () => { holds: Holdings; reconciled: ReconcileReport } | undefined;
  beforePause?: () => Promise<void>;
  signal?: AbortSignal;
  outcome: PrecopyOutcome;
}): AsyncGenerator<EncodedBatch> {
  const { vm, tracker, pool, encoder, policy, throttle, outcome } = o;
  const changedPages = () => tracker.changedPagesOnPool(vm.files.ramFile, pool);
  /** Disk blocks still to send plus those written since the last epoch began, ascending. */
  const withEpochDirty = async (pending: number[]) => [...new Set([...pending, ...(await vm.disk.takeEpochDirty())])].sort((a, b) => a - b);
  /** A pre-copy decision with the figures it rests on (the estimate it was taken on), to whoever steers the stream. */
  const decided = (epoch: number, action: PrecopyAction, reason: string, pending: number, estimate: number, dirtyBytesPerS: number | null) =>
    o.control.decided?.({
      epoch, action, reason, pendingChunks: pending, estimateMs: Math.round(estimate), budgetMs: policy.downtimeBudgetMs,
      R_Mbps: o.profiler.stopR_Mbps(), ratio: o.tally.ratioNow(), dirtyBytesPerS, guestPausedShare: throttle.pausedShare, atMs: Date.now() - o.startedAtMs,
    });

  // Epoch 0: everything that differs from the base; the disk's dirty set is all of it so far.
  let memoryPages = await changedPages();
  await vm.disk.takeEpochDirty();
  let diskBlocks = await vm.disk.dirtyBlocks();
  const resumed = o.resumed();
  if (resumed) {
    const t0 = Date.now();
    const disk = await blocksTargetLacks(diskBlocks, resumed.holds.disk, await vm.base.diskBlockHashes(), (i, into) => vm.disk.readBlock(i, into));
    diskBlocks = disk.lacking;
    Object.assign(resumed.reconciled, { diskBlocksKept: disk.kept, ms: resumed.reconciled.ms + Date.now() - t0 });
  }
  let previous = Infinity;
  for (let n = 0; ; n++) {
    const pending = memoryPages.length + diskBlocks.length;
    if (n > 0) {
      const estimate = encoder.estimateMs(pending);
      const lastEpochMs = encoder.epochs.at(-1)!.ms;
      const verdict = afterLiveEpoch({ liveEpochs: n, pendingChunks: pending, previousChunks: previous, estimateMs: estimate, guestPausedShare: throttle.pausedShare, lastEpochMs }, policy);
      if (verdict.action === 'slow-guest') {
        throttle.set(verdict.guestPausedShare);
        outcome.guestSlowdown.push({ epoch: n, share: throttle.pausedShare });
      }
      decided(n - 1, verdict.action, verdict.reason, pending, estimate, (pending * 4096) / Math.max(0.001, lastEpochMs / 1000));
      if (verdict.action === 'stop') {
        outcome.converged = verdict.converged;
        outcome.stopReason = verdict.reason;
        break;
      }
      if (verdict.action === 'post-copy') {
        outcome.postCopy = { reason: verdict.reason };
        outcome.stopReason = verdict.reason;
        break;
      }
    }
    previous = pending;
    yield* encoder.epoch(n, true, [
      { space: Space.Memory, indices: memoryPages },
      { space: Space.Disk, indices: diskBlocks },
    ]);
    memoryPages = await changedPages();
    diskBlocks = await vm.disk.takeEpochDirty();
  }
  // Before the pause: no more samples on the pool (the stop-time scan needs every thread), and
  // let the link drain what is already queued, while the guest still runs, so the final epoch
  // has the link to itself.
  await o.sampler.stop();
  await o.inFlight.drained(DRAIN_TIMEOUT_MS);
  // What the guest dirtied while the link drained (a demo run: 600 pages where 216 were left at
  // the decision) goes in more live epochs, each drained before the next scan, until what is
  // left would take half the budget or stops shrinking: the stopped epoch then holds little
  // more than what changes during the last of them.
  for (let k = 0, before = Infinity; outcome.converged && k < MAX_CATCH_UP_EPOCHS; k++) {
    const catchUpMemory = await changedPages();
    const catchUpDisk = await withEpochDirty(diskBlocks);
    diskBlocks = catchUpDisk;
    const pending = catchUpMemory.length + catchUpDisk.length;
    const estimate = encoder.estimateMs(pending);
    const verdict = afterDrain({ pendingChunks: pending, previousChunks: before, estimateMs: estimate }, policy);
    if (verdict.action === 'pause') break;
    decided(encoder.epochs.length, 'catch-up', verdict.reason, pending, estimate, null);
    before = pending;
    yield* encoder.epoch(encoder.epochs.length, true, [
      { space: Space.Memory, indices: catchUpMemory },
      { space: Space.Disk, indices: catchUpDisk },
    ]);
    diskBlocks = [];
    await o.inFlight.drained(DRAIN_TIMEOUT_MS);
  }
  // Stop and copy: pause, then send what changed since it was last read — the blocks taken for
  // an epoch that was not run among them.
  await throttle.release();
  o.signal?.throwIfAborted();
  await o.beforePause?.();
  stopTrace('src beforePause done');
  const stopped = await pauseAndStartStop({ vm, tracker, pool, diskBlocks: () => withEpochDirty(diskBlocks), marks: o.marks });
  outcome.stopped = stopped;
  const postCopy = outcome.postCopy;
  if (postCopy) {
    // Post-copy: the pages and disk blocks the stop-time scan finds are what the target fetches
    // once it runs (past MAX_POST_COPY_DISK_BLOCKS, the disk's go in the stopped epoch).
    const stale: number[] = [];
    const staleDisk: number[] = [];
    yield* encoder.epoch(encoder.epochs.length, false, heldBack(stopped.finalLists(), stale, staleDisk));
    postCopy.stale = Uint32Array.from(stale).sort();
    postCopy.staleSentBefore = stale.reduce((n, i) => n + (encoder.sentMemoryPage(i) ? 1 : 0), 0);
    postCopy.stopped = tracker.stoppedState(vm.files.ramFile, pool, postCopy.stale);
    postCopy.stopped.catch(() => undefined);
    postCopy.staleDisk = Uint32Array.from(staleDisk).sort();
    postCopy.diskStopped = loadHash64().then((hash64) => readStoppedDiskBlocks(vm.disk, postCopy.staleDisk!, hash64));
    postCopy.diskStopped.catch(() => undefined);
  } else {
    yield* encoder.epoch(encoder.epochs.length, false, stopped.finalLists());
  }
  o.marks.finalEpochEncodedAtMs = Date.now();
  // The digests of the paused state: memory from the hashes of the bytes read for sending (see
  // MemoryTracker.digest), the disk's taken at the pause.
  const memoryDigestAtStop = tracker.digest();
  outcome.digests = stopped.diskDigest.then((disk) => ({ memoryDigest: memoryDigestAtStop, diskDigest: disk }));
  outcome.digests.catch(() => undefined);
}

/**
 * A post-copy's stopped epoch: its memory pages go into `stale` instead of the epoch, its disk
 * blocks into `staleDisk` while they fit in MAX_POST_COPY_DISK_BLOCKS (a list that would not fit
 * is sent).
 */
async function* heldBack(lists: AsyncIterable<ChunkList>, stale: number[], staleDisk: number[]): AsyncGenerator<ChunkList> {
  for await (const list of lists) {
    if (list.space === Space.Memory) for (const i of list.indices) stale.push(i);
    else if (staleDisk.length + list.indices.length <= MAX_POST_COPY_DISK_BLOCKS) for (const i of list.indices) staleDisk.push(i);
    else yield list;
  }
}
