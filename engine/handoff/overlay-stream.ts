import { open, readFile } from 'node:fs/promises';
import { stopMode, type ModeId } from '../adaptation/mode.js';
import { StreamProfiler } from '../adaptation/stream-profiler.js';
import type { PrecopyProgress } from '../adaptation/measurements.js';
import { DEFAULT_PRECOPY, type PrecopyAction, type PrecopyPolicy } from './precopy-policy.js';
import { MAX_CATCH_UP_EPOCHS, afterDrain, afterLiveEpoch, finalEpochEstimateMs } from './precopy-rule.js';
import type { CodecPool } from '../pipeline/codec-pool.js';
import { Space } from '../pipeline/chunk-records.js';
import { baseChunkReader, vmChunkReader } from '../pipeline/chunk-source.js';
import type { DedupIndex } from '../pipeline/dedup-index.js';
import { encodeOverlay, type ChunkList, type EncodedBatch } from '../pipeline/overlay-encoder.js';
import type { VmInstance } from '../cloudlet/vm-instance.js';
import { MemoryTracker, type BasePageHashes } from '../memory/memory-tracker.js';
import { sendOverlay, type DataEndpoint } from '../wire/overlay-sender.js';
import type { CloudletTls } from '../wire/cloudlet-tls.js';
import type { Ack } from '../wire/frames.js';
import type { StreamControl } from './stream-control.js';
import { GuestThrottle } from '../vm/guest-throttle.js';
import { loadHash64 } from '../pipeline/checksum.js';
import { SentChunkCache } from '../pipeline/sent-chunk-cache.js';
import { BLOCK_SIZE } from '../blocks.js';
import { encodedHoldingsBytes, type Holdings } from '../wire/holdings.js';
import { blocksTargetLacks, keepHeldSends, seedTracker } from './reconcile.js';
import { ZERO_PAGE_SHA } from '../memory/page-hash-table.js';
import { stopTrace } from '../stop-trace.js';
import { deferred } from '../deferred.js';
import { InFlightBatches } from './in-flight-batches.js';
import { ModeSampler } from './mode-sampler.js';
import { pauseAndStartStop, type StopWork } from './stop-work.js';
import { StreamTally } from './stream-tally.js';
import type { EpochReport, ReconcileReport, SourceStopMarks, StageTotals, StateDigests } from '../contract.js';

export interface OverlayStreamResult extends StateDigests {
  bytesSent: number;
  ack: Ack;
  streamMs: number;
  stages: StageTotals;
  modesUsed: Record<ModeId, number>;
  epochs: EpochReport[];
  /** Why the live epochs ended: converged within the budget, or why not. */
  stopReason: string;
  converged: boolean;
  /** When the guest was slowed to let the epochs converge, and to what share paused. */
  guestSlowdown: Array<{ epoch: number; share: number }>;
  /** The stop: when the VM paused and its last heartbeat (the digests are its state's at that moment). */
  pausedAtMs: number;
  heartbeatAtStop: number | null;
  /** Host time the last heartbeat before the stop arrived, and the longest silence while live. */
  lastHeartbeatAtMs: number | null;
  liveMaxGapMs: number;
  deviceStateBytes: number;
  /**
   * A resumed attempt's reconcile with what the target held already: chunks it named (content
   * other than the base's) and of those, the ones it did not need again; null on a first attempt.
   */
  reconciled: ReconcileReport | null;
  stopMarks: SourceStopMarks;
}


const sentChunkCapacity = (policy: PrecopyPolicy) => Math.floor((policy.sentChunkCacheMiB * 2 ** 20) / BLOCK_SIZE);

/** The cache of what was last sent per chunk, sized by the policy. */
export function sentChunkCacheFor(policy: PrecopyPolicy): SentChunkCache {
  return new SentChunkCache(sentChunkCapacity(policy));
}

/** The same, kept in `path` (on tmpfs), where it outlives the process. */
export function sentChunkCacheInFile(path: string, policy: PrecopyPolicy): SentChunkCache {
  return SentChunkCache.inFile(path, sentChunkCapacity(policy));
}

/** How often the stream reports its measurements (and checks for a sharp change in R). */
const REPORT_EVERY_MS = 1_000;
/** The longest the live side waits for the link to drain before the pause. */
const DRAIN_TIMEOUT_MS = 10_000;

/**
 * Live handoff of a running VM: pre-copy epochs ship what the target does not hold yet (epoch 0:
 * everything that differs from the base; later: pages whose content changed since it was read
 * for sending, disk blocks written since), while the guest runs. When what is left fits the
 * downtime budget — or the guest dirties faster than the link drains — the VM pauses, its device
 * state is saved, and a final epoch sends the rest. P, r and R are measured throughout and the
 * mode follows `control`.
 */
export async function streamOverlay(opts: {
  handoffId: string;
  vm: VmInstance;
  endpoint: DataEndpoint;
  /** The source cloudlet's certificate, key and site CA, for the data connection. */
  tls: CloudletTls;
  pool: CodecPool;
  dedup: DedupIndex;
  /** The base memory's page hashes (the cloudlet keeps them per base): where tracking starts. */
  basePageHashes: BasePageHashes;
  control: StreamControl;
  precopy?: PrecopyPolicy;
  /** This stream's attempt: the target refuses frames of an older one once a newer connected. */
  attempt?: number;
  /** Ends the stream; once aborted, the end frame never leaves. */
  signal?: AbortSignal;
  /**
   * Called (and awaited) once the target took this attempt (its holdings came), before anything
   * is read for sending: an attempt after an unanswered commit lets the VM run again only then.
   */
  targetAccepted?: () => Promise<void>;
  /** Called (and awaited) before the VM is paused for the final epoch: the phase is declared first. */
  beforePause?: () => Promise<void>;
  /**
   * Called as the final epoch's last batch leaves, and awaited before the end frame and the
   * commit behind it, which lets the target run the VM, are handed to the link.
   */
  beforeCommit?: () => Promise<void>;
  /**
   * What earlier attempts of this handoff in this process last sent per chunk (see
   * SentChunkCache): a resumed attempt keeps sending re-dirtied chunks as XORs against what the
   * target holds. A fresh cache when not given.
   */
  sentChunks?: SentChunkCache;
}): Promise<OverlayStreamResult> {
  const { vm, pool, control } = opts;
  const policy = opts.precopy ?? DEFAULT_PRECOPY;
  const started = Date.now();
  const memoryBytes = vm.base.manifest.memory.sizeBytes;
  const [ram, baseMemory, baseDisk] = await Promise.all([open(vm.files.ramFile, 'r'), open(vm.base.path('memory'), 'r'), open(vm.base.path('disk'), 'r')]);
  const deviceStateBase = await readFile(vm.base.path('deviceState'));
  const profiler = new StreamProfiler(pool.threads);
  const tally = new StreamTally();
  const epochs: EpochReport[] = [];
  let lastReportedR: number | null = null;
  /** Where the pre-copy stands, carried in every report (what `ehoff watch` shows). */
  let precopy: PrecopyProgress = { epoch: 0, live: true, epochChunks: null, chunksSent: 0, dirtyBytesPerS: null, predictedDowntimeMs: null };
  const report = () => {
    const m = profiler.measurements(control.mode());
    lastReportedR = m.R_Mbps;
    control.report({ ...m, precopy: { ...precopy } });
  };
  const reporter = setInterval(report, REPORT_EVERY_MS);
  const sampler = new ModeSampler({ pool, profiler, control, startedAtMs: started });

  const marks: SourceStopMarks = { pausedAtMs: 0, scannedAtMs: 0, finalEpochEncodedAtMs: 0, deviceStateSavedAtMs: 0, ackedAtMs: 0, digestedAtMs: 0 };
  const inFlight = new InFlightBatches();
  /** The first batch sent after the pause, and the target's ack of it or of a later one. */
  const sincePause = { firstSeq: undefined as number | undefined, answered: deferred<void>() };
  const stop = { converged: false, stopReason: '' };
  vm.heartbeats.resetMaxGap();
  const throttle = new GuestThrottle(vm.host);
  const previous = opts.sentChunks ?? sentChunkCacheFor(policy);
  const slowedAt: Array<{ epoch: number; share: number }> = [];
  /** Everything the stop started at the pause (see pauseAndStartStop). */
  let stopped: StopWork | undefined;
  let digests: Promise<StateDigests> | undefined;
  try {
    const source = vmChunkReader(ram, memoryBytes, vm.disk);
    const base = baseChunkReader(baseMemory, memoryBytes, baseDisk, vm.base.manifest.disk.sizeBytes);
    // The pool's threads hash with the same xxHash64 when they scan for changed pages.
    const tracker = MemoryTracker.fromBase(opts.basePageHashes, await loadHash64());
    // A resumed attempt: the tracker learns what the target holds before the first scan, and
    // the disk's first epoch leaves out the blocks it holds as they are here.
    let reconciled: ReconcileReport | null = null;
    let targetHolds: Holdings | undefined;
    const reconcile = async (h: Holdings) => {
      await opts.targetAccepted?.();
      const t0 = Date.now();
      const memory = await seedTracker(tracker, ram, memoryBytes, h.memory);
      const baseBlocks = await vm.base.diskBlockHashes();
      keepHeldSends(previous, h, { page: (i) => opts.basePageHashes.sha.sha(i), block: (i) => baseBlocks.get(i) ?? ZERO_PAGE_SHA });
      targetHolds = h;
      reconciled = {
        memoryPagesHeld: memory.held, memoryPagesKept: memory.kept, diskBlocksHeld: h.disk.indices.length, diskBlocksKept: 0,
        holdingsBytes: encodedHoldingsBytes(h), ms: Date.now() - t0,
      };
    };
    const changedPages = () => tracker.changedPagesOnPool(vm.files.ramFile, pool);
    /** Disk blocks still to send plus those written since the last epoch began, ascending. */
    const withEpochDirty = async (pending: number[]) => [...new Set([...pending, ...(await vm.disk.takeEpochDirty())])].sort((a, b) => a - b);
    const estimateMs = (pending: number) => {
      const last = epochs.at(-1);
      return finalEpochEstimateMs(pending, { stopR_Mbps: profiler.stopR_Mbps(), ratio: tally.ratioNow(), lastEpoch: last && { chunks: last.memoryPages + last.diskBlocks, ms: last.ms } });
    };
    let seq = 0;
    const epoch = async function* (n: number, live: boolean, lists: Iterable<ChunkList> | AsyncIterable<ChunkList>): AsyncGenerator<EncodedBatch> {
      const t0 = Date.now();
      // A live epoch's chunks are known before it starts (the stopped one's come from a scan as it runs).
      const known = Array.isArray(lists) ? (lists as ChunkList[]).reduce((k, l) => k + (Array.isArray(l.indices) ? l.indices.length : 0), 0) : null;
      const last = epochs.at(-1);
      precopy = {
        epoch: n,
        live,
        epochChunks: known,
        chunksSent: 0,
        // What the guest dirtied while the last epoch was sent, per second of it.
        dirtyBytesPerS: known !== null && last && live ? (known * 4096) / Math.max(0.001, last.ms / 1000) : null,
        predictedDowntimeMs: known !== null && n > 0 ? Math.round(estimateMs(known)) : null,
      };
      const mark = tally.epochStarts();
      const sizes = { memoryPages: 0, diskBlocks: 0 };
      const counted = async function* () {
        for await (const list of lists) {
          sizes[list.space === Space.Memory ? 'memoryPages' : 'diskBlocks'] += list.indices.length;
          yield list;
        }
      };
      // When the sender asked for the batch now awaited: the wait that follows is the pipeline's
      // — unless a sample round shared the pool meanwhile (the stream's own pace is wanted).
      let asked = performance.now();
      let roundsAtAsk = sampler.roundsStarted;
      let sampledAtAsk = sampler.busy;
      for await (const b of encodeOverlay(counted(), {
        pool,
        // While the guest runs, the bytes behind a self-reference could change: none then.
        dedup: opts.dedup.forOverlay({ selfRefs: !live }),
        source,
        base,
        // Stopped after converging, the last epoch is small and its time is latency: a cheap
        // mode. Stopped because the guest outran the link, it is large and link-bound: the mode
        // chosen for throughput, min(P, R/r), is the one that gets it across soonest.
        currentMode: live || !stop.converged ? () => control.mode() : () => stopMode(control.mode()),
        onClassified: (r) => sampler.offer(r),
        onChunkRead: (space, index, data) => {
          if (space === Space.Memory) tracker.sent(index, data);
        },
        previous,
      })) {
        opts.signal?.throwIfAborted();
        const got = performance.now();
        yield { ...b, seq: seq++ };
        const again = performance.now();
        if (!sampledAtAsk && !sampler.busy && sampler.roundsStarted === roundsAtAsk) profiler.recordDelivery(b.modeId, b.inputBytes, again - asked, got - asked);
        asked = again;
        roundsAtAsk = sampler.roundsStarted;
        sampledAtAsk = sampler.busy;
      }
      epochs.push({ epoch: n, live, ...sizes, ms: Date.now() - t0 });
      // Every batch of the epoch has been handed to the sender (it counts them before asking for
      // the next), so the tally holds the whole epoch.
      tally.epochEnded(mark, n, live);
    };
    /** A pre-copy decision with the figures it rests on (the estimate it was taken on), to whoever steers the stream. */
    const decided = (epoch: number, action: PrecopyAction, reason: string, pending: number, estimate: number, dirtyBytesPerS: number | null) =>
      control.decided?.({
        epoch, action, reason, pendingChunks: pending, estimateMs: Math.round(estimate), budgetMs: policy.downtimeBudgetMs,
        R_Mbps: profiler.stopR_Mbps(), ratio: tally.ratioNow(), dirtyBytesPerS, guestPausedShare: throttle.pausedShare, atMs: Date.now() - started,
      });
    const batches = async function* (): AsyncGenerator<EncodedBatch> {
      // Epoch 0: everything that differs from the base; the disk's dirty set is all of it so far.
      let memoryPages = await changedPages();
      await vm.disk.takeEpochDirty();
      let diskBlocks = await vm.disk.dirtyBlocks();
      if (targetHolds && reconciled) {
        const t0 = Date.now();
        const disk = await blocksTargetLacks(diskBlocks, targetHolds.disk, await vm.base.diskBlockHashes(), (i, into) => vm.disk.readBlock(i, into));
        diskBlocks = disk.lacking;
        Object.assign(reconciled, { diskBlocksKept: disk.kept, ms: reconciled.ms + Date.now() - t0 });
      }
      let previous = Infinity;
      for (let n = 0; ; n++) {
        const pending = memoryPages.length + diskBlocks.length;
        if (n > 0) {
          const estimate = estimateMs(pending);
          const verdict = afterLiveEpoch({ liveEpochs: n, pendingChunks: pending, previousChunks: previous, estimateMs: estimate, guestPausedShare: throttle.pausedShare }, policy);
          if (verdict.action === 'slow-guest') {
            throttle.set(verdict.guestPausedShare);
            slowedAt.push({ epoch: n, share: throttle.pausedShare });
          }
          decided(n - 1, verdict.action, verdict.reason, pending, estimate, (pending * 4096) / Math.max(0.001, epochs.at(-1)!.ms / 1000));
          if (verdict.action === 'stop') {
            stop.converged = verdict.converged;
            stop.stopReason = verdict.reason;
            break;
          }
        }
        previous = pending;
        yield* epoch(n, true, [
          { space: Space.Memory, indices: memoryPages },
          { space: Space.Disk, indices: diskBlocks },
        ]);
        memoryPages = await changedPages();
        diskBlocks = await vm.disk.takeEpochDirty();
      }
      // Before the pause: no more samples on the pool (the stop-time scan needs every thread),
      // and let the link drain what is already queued, while the guest still runs, so the
      // final epoch has the link to itself.
      await sampler.stop();
      await inFlight.drained(DRAIN_TIMEOUT_MS);
      // What the guest dirtied while the link drained (a demo run: 600 pages where 216 were
      // left at the decision) goes in more live epochs, each drained before the next scan, until
      // what is left would take half the budget or stops shrinking: the stopped epoch then holds
      // little more than what changes during the last of them.
      for (let k = 0, before = Infinity; stop.converged && k < MAX_CATCH_UP_EPOCHS; k++) {
        const catchUpMemory = await changedPages();
        const catchUpDisk = await withEpochDirty(diskBlocks);
        diskBlocks = catchUpDisk;
        const pending = catchUpMemory.length + catchUpDisk.length;
        const estimate = estimateMs(pending);
        const verdict = afterDrain({ pendingChunks: pending, previousChunks: before, estimateMs: estimate }, policy);
        if (verdict.action === 'pause') break;
        decided(epochs.length, 'catch-up', verdict.reason, pending, estimate, null);
        before = pending;
        yield* epoch(epochs.length, true, [
          { space: Space.Memory, indices: catchUpMemory },
          { space: Space.Disk, indices: catchUpDisk },
        ]);
        diskBlocks = [];
        await inFlight.drained(DRAIN_TIMEOUT_MS);
      }
      // Stop and copy: pause, then send what changed since it was last read — the blocks taken
      // for an epoch that was not run among them.
      await throttle.release();
      opts.signal?.throwIfAborted();
      await opts.beforePause?.();
      stopTrace('src beforePause done');
      stopped = await pauseAndStartStop({ vm, tracker, pool, diskBlocks: () => withEpochDirty(diskBlocks), marks });
      yield* epoch(epochs.length, false, stopped.finalLists());
      marks.finalEpochEncodedAtMs = Date.now();
      // The digests of the paused state: memory from the hashes of the bytes read for sending
      // (see MemoryTracker.digest), the disk's taken at the pause.
      const memoryDigestAtStop = tracker.digest();
      digests = stopped.diskDigest.then((disk) => ({ memoryDigest: memoryDigestAtStop, diskDigest: disk }));
      digests.catch(() => undefined);
    };
    let deviceStateBytes = 0;
    const { bytesSent, ack } = await sendOverlay(
      opts.endpoint,
      opts.tls,
      {
        handoffId: opts.handoffId,
        attempt: opts.attempt ?? 1,
        signal: opts.signal,
        beforeCommit: opts.beforeCommit,
        // Asked once every batch was sent: none after the pause (nothing changed since the last
        // live epoch) leaves nothing to wait on.
        answeredSincePause: () => (sincePause.firstSeq === undefined ? Promise.resolve() : sincePause.answered.promise),
        reconcile,
        batches: batches(),
        deviceState: async () => {
          if (!stopped) throw new Error('the device state was not saved: the VM was never paused');
          const d = await stopped.deviceState;
          deviceStateBytes = d.length;
          return d;
        },
        // Ready by then: computed right after the final epoch, while the device state is saved.
        deviceStateBase,
        stopState: async () => {
          if (!digests || !stopped) throw new Error('no stop-time digests: the final epoch did not run');
          return { ...(await digests), heartbeatAtStop: await stopped.heartbeatAtStop };
        },
        capMbps: () => control.bandwidthCapMbps(),
      },
      {
        sent: (b, frameBytes) => {
          if (marks.pausedAtMs) stopTrace(`src batch ${b.seq} ${frameBytes} B ${b.stages.chunks} chunks`);
          if (marks.pausedAtMs && sincePause.firstSeq === undefined) sincePause.firstSeq = b.seq;
          inFlight.sent();
          profiler.recordBatch(b, frameBytes);
          precopy.chunksSent += b.stages.chunks;
          tally.sent(b);
        },
        acked: (a) => {
          if (marks.pausedAtMs) stopTrace(`src ack ${a.seq}`);
          if (sincePause.firstSeq !== undefined && a.seq >= sincePause.firstSeq) sincePause.answered.resolve();
          inFlight.acked();
          profiler.recordAck(a);
          const R = profiler.R_Mbps();
          // A sharp change in R is reported at once, not at the next tick.
          if (R !== null && (lastReportedR === null || Math.abs(R - lastReportedR) > 0.3 * lastReportedR)) report();
        },
      },
    );
    marks.ackedAtMs = Date.now();
    report();
    const { memoryDigest, diskDigest: disk } = await digests!;
    const heartbeatAtStop = await stopped!.heartbeatAtStop;
    marks.digestedAtMs = Date.now();
    return {
      bytesSent, ack, streamMs: Date.now() - started, stages: tally.stages, modesUsed: tally.modesUsed, epochs,
      stopReason: stop.stopReason, converged: stop.converged, guestSlowdown: slowedAt, pausedAtMs: marks.pausedAtMs, heartbeatAtStop,
      lastHeartbeatAtMs: stopped!.lastHeartbeatAtMs, liveMaxGapMs: stopped!.liveMaxGapMs,
      memoryDigest, diskDigest: disk, deviceStateBytes, reconciled, stopMarks: marks,
    };
  } finally {
    await throttle.release();
    clearInterval(reporter);
    sampler.cancel();
    await Promise.allSettled([ram.close(), baseMemory.close(), baseDisk.close()]);
  }
}
