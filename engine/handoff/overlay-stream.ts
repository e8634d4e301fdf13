import { open, readFile } from 'node:fs/promises';
import { ALL_MODES, modeId, stopMode, type ModeId } from '../adaptation/mode.js';
import { StreamProfiler } from '../adaptation/stream-profiler.js';
import { effectiveMBps } from '../adaptation/choose-mode.js';
import { modesToSample, sampleBudgetAllows } from '../adaptation/sample-plan.js';
import type { PrecopyProgress } from '../adaptation/measurements.js';
import { DEFAULT_PRECOPY, type PrecopyAction, type PrecopyPolicy } from './precopy-policy.js';
import { MAX_CATCH_UP_EPOCHS, afterDrain, afterLiveEpoch } from './precopy-rule.js';
import type { CodecPool } from '../pipeline/codec-pool.js';
import { Space, type ChunkRecord } from '../pipeline/chunk-records.js';
import { baseChunkReader, vmChunkReader } from '../pipeline/chunk-source.js';
import type { DedupIndex } from '../pipeline/dedup-index.js';
import { encodeOverlay, type ChunkList, type EncodedBatch } from '../pipeline/overlay-encoder.js';
import type { VmInstance } from '../cloudlet/vm-instance.js';
import { MemoryTracker, type BasePageHashes } from '../memory/memory-tracker.js';
import { sendOverlay, type DataEndpoint } from '../wire/overlay-sender.js';
import type { CloudletTls } from '../wire/cloudlet-tls.js';
import type { Ack } from '../wire/frames.js';
import type { StreamControl } from './stream-control.js';
import { diskDigest } from './state-digest.js';
import { GuestThrottle } from '../vm/guest-throttle.js';
import { loadHash64 } from '../pipeline/checksum.js';
import { SentChunkCache } from '../pipeline/sent-chunk-cache.js';
import { BLOCK_SIZE } from '../blocks.js';
import { encodedHoldingsBytes, type Holdings } from '../wire/holdings.js';
import { blocksTargetLacks, keepHeldSends, seedTracker } from './reconcile.js';
import { ZERO_PAGE_SHA } from '../memory/page-hash-table.js';
import { stopTrace } from '../stop-trace.js';
import { deferred } from '../deferred.js';
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
/** How often a few other modes are tried on a sample of recent chunks. */
const SAMPLE_EVERY_MS = 1_500;
const MODES_PER_SAMPLE = 4;
const SAMPLE_CANDIDATES = ALL_MODES.map(modeId);
const SAMPLE_CHUNKS = 64;
/** A re-sending epoch's compression ratio is trusted from this much input on (64 chunks). */
const MIN_RATIO_INPUT_BYTES = 64 * 4096;
/** The longest the live side waits for the link to drain before the pause. */
const DRAIN_TIMEOUT_MS = 10_000;
/**
 * The stop-time scan runs in this many shares per pool thread, consumed in file order: what the
 * first shares find is encoded and on the link while the rest is scanned.
 */
const STOP_SCAN_SHARES_PER_THREAD = 4;

/** Batches handed to the link and not yet acknowledged as applied by the target. */
class InFlightBatches {
  private count = 0;
  private waiter?: () => void;

  sent(): void {
    this.count++;
  }

  acked(): void {
    this.count--;
    if (this.count <= 0) this.waiter?.();
  }

  /** Resolves once every batch sent was applied, or after `timeoutMs` (the stop goes on). */
  drained(timeoutMs: number): Promise<void> {
    if (this.count <= 0) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      this.waiter = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }
}

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
  const stages = { chunks: 0, zero: 0, baseRefs: 0, selfRefs: 0, data: 0, againstPrevious: 0, inputBytes: 0, rawBytes: 0, payloadBytes: 0 };
  const modesUsed: Record<ModeId, number> = {};
  const epochs: EpochReport[] = [];
  let latest: ChunkRecord[] = [];
  let lastReportedR: number | null = null;
  /** Compressed / input bytes of the last live epoch that sent enough to tell (see the estimate). */
  let recentRatio: number | null = null;
  /** Where the pre-copy stands, carried in every report (what `ehoff watch` shows). */
  let precopy: PrecopyProgress = { epoch: 0, live: true, epochChunks: null, chunksSent: 0, dirtyBytesPerS: null, predictedDowntimeMs: null };
  const report = () => {
    const m = profiler.measurements(control.mode());
    lastReportedR = m.R_Mbps;
    control.report({ ...m, precopy: { ...precopy } });
  };
  const reporter = setInterval(report, REPORT_EVERY_MS);
  let sampleCursor = 0;
  let sampling = false;
  let samplingDone: Promise<unknown> = Promise.resolve();
  let samplingBusyMs = 0;
  const sampler = setInterval(() => {
    if (sampling || latest.length === 0 || control.pinned?.()) return;
    if (!sampleBudgetAllows(samplingBusyMs, Date.now() - started)) return;
    const records = latest.filter((r) => r.kind === 'data').slice(0, SAMPLE_CHUNKS);
    if (records.length === 0) return;
    const current = control.mode();
    const m = profiler.measurements(current);
    const pick = modesToSample({
      candidates: SAMPLE_CANDIDATES, current, measured: m.modes, count: MODES_PER_SAMPLE, cursor: sampleCursor,
      currentEffMBps: effectiveMBps(m, current, { bandwidthCapMbps: control.bandwidthCapMbps() }),
    });
    sampleCursor = pick.cursor;
    if (pick.modes.length === 0) return;
    sampling = true;
    // The streamed mode on the same chunks, beside them: the others are judged against it.
    const encoded = async (mode: ModeId) => {
      const r = await pool.encode({ modeId: mode, records });
      samplingBusyMs += r.busyMs;
      return { mode, outBytes: r.payload.length, busyMs: r.busyMs };
    };
    const reference = encoded(current);
    samplingDone = Promise.all(
      pick.modes.map(async (mode) => {
        const [r, ref] = await Promise.all([encoded(mode), reference]);
        profiler.recordSample(mode, records.length * 4096, r.outBytes, r.busyMs, ref);
      }),
    )
      // A failed sample only costs a measurement; the stream goes on.
      .catch(() => undefined)
      .finally(() => (sampling = false));
  }, SAMPLE_EVERY_MS);

  const marks = { pausedAtMs: 0, scannedAtMs: 0, finalEpochEncodedAtMs: 0, deviceStateSavedAtMs: 0, ackedAtMs: 0, digestedAtMs: 0 };
  const inFlight = new InFlightBatches();
  /** The first batch sent after the pause, and the target's ack of it or of a later one. */
  const sincePause = { firstSeq: undefined as number | undefined, answered: deferred<void>() };
  const stop = { pausedAtMs: 0, heartbeatAtStop: null as number | null, converged: false, stopReason: '', liveMaxGapMs: 0, lastHeartbeatAtMs: null as number | null };
  vm.heartbeats.resetMaxGap();
  const throttle = new GuestThrottle(vm.host);
  const previous = opts.sentChunks ?? sentChunkCacheFor(policy);
  const slowedAt: Array<{ epoch: number; share: number }> = [];
  let digests: Promise<StateDigests> | undefined;
  /** The guest's last heartbeat counter at the pause, read alongside the scan. */
  let heartbeatAtStop: Promise<number | null> = Promise.resolve(null);
  let deviceStateSaved: Promise<Buffer> | undefined;
  const saveDeviceState = async () => {
    await vm.host.saveDeviceState(vm.files.deviceState);
    return readFile(vm.files.deviceState);
  };
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
        predictedDowntimeMs: known !== null && n > 0 ? Math.round(finalEpochEstimateMs(known)) : null,
      };
      const before = { input: stages.inputBytes, payload: stages.payloadBytes };
      const sizes = { memoryPages: 0, diskBlocks: 0 };
      const counted = async function* () {
        for await (const list of lists) {
          sizes[list.space === Space.Memory ? 'memoryPages' : 'diskBlocks'] += list.indices.length;
          yield list;
        }
      };
      // When the sender asked for the batch now awaited: the wait that follows is the pipeline's.
      let asked = performance.now();
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
        onClassified: (r) => (latest = r),
        onChunkRead: (space, index, data) => {
          if (space === Space.Memory) tracker.sent(index, data);
        },
        previous,
      })) {
        opts.signal?.throwIfAborted();
        const got = performance.now();
        yield { ...b, seq: seq++ };
        const again = performance.now();
        profiler.recordDelivery(b.modeId, b.inputBytes, again - asked, got - asked);
        asked = again;
      }
      epochs.push({ epoch: n, live, ...sizes, ms: Date.now() - t0 });
      // Every batch of the epoch has been handed to the sender (it counts them before asking for
      // the next), so the counters hold the whole epoch.
      const input = stages.inputBytes - before.input;
      if (live && n > 0 && input >= MIN_RATIO_INPUT_BYTES) recentRatio = (stages.payloadBytes - before.payload) / input;
    };
    /**
     * How long `pending` chunks would take to send: at the compression of the last re-sending
     * epoch (its chunks are like the final epoch's: pages dirtied again, most sent as XORs with
     * their previous send — the first epoch's ratio says little about them), else of all so far,
     * over the rate the link kept lately (StreamProfiler.stopR_Mbps, its low quantile over 15 s:
     * a rate that drops during the stop must not break the budget); where no rate is measured (a fast link never fills
     * the window), at the last epoch's pace, which then is the pipeline's.
     */
    const ratioNow = () => recentRatio ?? (stages.inputBytes > 0 ? stages.payloadBytes / stages.inputBytes : 1);
    const finalEpochEstimateMs = (pending: number): number => {
      const R = profiler.stopR_Mbps();
      const ratio = ratioNow();
      if (R !== null && R > 0) return (pending * 4096 * ratio * 8) / (R * 1e3);
      const last = epochs.at(-1)!;
      const pace = ((last.memoryPages + last.diskBlocks) * 4096) / Math.max(1, last.ms); // bytes per ms
      return (pending * 4096) / Math.max(pace, 1);
    };
    /** A pre-copy decision with the figures it rests on (the estimate it was taken on), to whoever steers the stream. */
    const decided = (epoch: number, action: PrecopyAction, reason: string, pending: number, estimateMs: number, dirtyBytesPerS: number | null) =>
      control.decided?.({
        epoch, action, reason, pendingChunks: pending, estimateMs: Math.round(estimateMs), budgetMs: policy.downtimeBudgetMs,
        R_Mbps: profiler.stopR_Mbps(), ratio: ratioNow(), dirtyBytesPerS, guestPausedShare: throttle.pausedShare, atMs: Date.now() - started,
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
          const estimateMs = finalEpochEstimateMs(pending);
          const verdict = afterLiveEpoch({ liveEpochs: n, pendingChunks: pending, previousChunks: previous, estimateMs, guestPausedShare: throttle.pausedShare }, policy);
          if (verdict.action === 'slow-guest') {
            throttle.set(verdict.guestPausedShare);
            slowedAt.push({ epoch: n, share: throttle.pausedShare });
          }
          decided(n - 1, verdict.action, verdict.reason, pending, estimateMs, (pending * 4096) / Math.max(0.001, epochs.at(-1)!.ms / 1000));
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
      clearInterval(sampler);
      await samplingDone.catch(() => undefined);
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
        const estimateMs = finalEpochEstimateMs(pending);
        const verdict = afterDrain({ pendingChunks: pending, previousChunks: before, estimateMs }, policy);
        if (verdict.action === 'pause') break;
        decided(epochs.length, 'catch-up', verdict.reason, pending, estimateMs, null);
        before = pending;
        yield* epoch(epochs.length, true, [
          { space: Space.Memory, indices: catchUpMemory },
          { space: Space.Disk, indices: catchUpDisk },
        ]);
        diskBlocks = [];
        await inFlight.drained(DRAIN_TIMEOUT_MS);
      }
      // Stop and copy: pause, then send what changed since it was last read.
      await throttle.release();
      opts.signal?.throwIfAborted();
      await opts.beforePause?.();
      stopTrace('src beforePause done');
      await vm.host.pause();
      stop.pausedAtMs = Date.now();
      stopTrace('src paused');
      marks.pausedAtMs = stop.pausedAtMs;
      // From here every step runs alongside the scan, which starts as soon as the final epoch
      // asks for its lists: nothing is awaited before it.
      // The device state does not depend on RAM (x-ignore-shared): saved alongside the scan.
      deviceStateSaved = saveDeviceState().then((d) => {
        marks.deviceStateSavedAtMs = Date.now();
        stopTrace('src device state saved');
        return d;
      });
      deviceStateSaved.catch(() => undefined);
      // The disk is still once the VM is paused (QEMU drains its I/O at `stop`): its digest,
      // from base + overlay, is taken now too, not after the final epoch.
      const diskAtStop = diskDigest(vm.base, vm.disk);
      diskAtStop.catch(() => undefined);
      heartbeatAtStop = vm.serial.lastHeartbeat().then((hb) => hb ?? null);
      heartbeatAtStop.catch(() => undefined);
      stop.liveMaxGapMs = vm.heartbeats.maxGapMs;
      stop.lastHeartbeatAtMs = vm.heartbeats.last?.atMs ?? null;
      // The blocks taken for the epoch that was not run still have to go.
      const finalDisk = withEpochDirty(diskBlocks);
      finalDisk.catch(() => undefined);
      const scan = tracker.changedPagesByShare(vm.files.ramFile, pool, STOP_SCAN_SHARES_PER_THREAD);
      const finalLists = async function* (): AsyncGenerator<ChunkList> {
        for await (const share of scan) {
          stopTrace(`src share ${share.length}`);
          yield { space: Space.Memory, indices: Array.from(share) };
        }
        marks.scannedAtMs = Date.now();
        yield { space: Space.Disk, indices: await finalDisk };
      };
      yield* epoch(epochs.length, false, finalLists());
      marks.finalEpochEncodedAtMs = Date.now();
      // The digests of the paused state: memory from the hashes of the bytes read for sending
      // (see MemoryTracker.digest), the disk's taken at the pause.
      const memoryDigestAtStop = tracker.digest();
      digests = diskAtStop.then((disk) => ({ memoryDigest: memoryDigestAtStop, diskDigest: disk }));
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
          if (!deviceStateSaved) throw new Error('the device state was not saved: the VM was never paused');
          const d = await deviceStateSaved;
          deviceStateBytes = d.length;
          return d;
        },
        // Ready by then: computed right after the final epoch, while the device state is saved.
        deviceStateBase,
        stopState: async () => {
          if (!digests) throw new Error('no stop-time digests: the final epoch did not run');
          return { ...(await digests), heartbeatAtStop: await heartbeatAtStop };
        },
        capMbps: () => control.bandwidthCapMbps(),
      },
      {
        sent: (b, frameBytes) => {
          if (stop.pausedAtMs) stopTrace(`src batch ${b.seq} ${frameBytes} B ${b.stages.chunks} chunks`);
          if (stop.pausedAtMs && sincePause.firstSeq === undefined) sincePause.firstSeq = b.seq;
          inFlight.sent();
          profiler.recordBatch(b, frameBytes);
          precopy.chunksSent += b.stages.chunks;
          for (const k of ['chunks', 'zero', 'baseRefs', 'selfRefs', 'data', 'againstPrevious'] as const) stages[k] += b.stages[k];
          stages.inputBytes += b.inputBytes;
          stages.rawBytes += b.rawBytes;
          stages.payloadBytes += b.payload.length;
          modesUsed[b.modeId] = (modesUsed[b.modeId] ?? 0) + 1;
        },
        acked: (a) => {
          if (stop.pausedAtMs) stopTrace(`src ack ${a.seq}`);
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
    stop.heartbeatAtStop = await heartbeatAtStop;
    marks.digestedAtMs = Date.now();
    return {
      bytesSent, ack, streamMs: Date.now() - started, stages, modesUsed, epochs,
      stopReason: stop.stopReason, converged: stop.converged, guestSlowdown: slowedAt, pausedAtMs: stop.pausedAtMs, heartbeatAtStop: stop.heartbeatAtStop,
      lastHeartbeatAtMs: stop.lastHeartbeatAtMs, liveMaxGapMs: stop.liveMaxGapMs,
      memoryDigest, diskDigest: disk, deviceStateBytes, reconciled, stopMarks: marks,
    };
  } finally {
    await throttle.release();
    clearInterval(reporter);
    clearInterval(sampler);
    await Promise.allSettled([ram.close(), baseMemory.close(), baseDisk.close()]);
  }
}
