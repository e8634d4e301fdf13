import { open, readFile } from 'node:fs/promises';
import { stopMode, type ModeId } from '../adaptation/mode.js';
import { StreamProfiler } from '../adaptation/stream-profiler.js';
import type { PrecopyProgress } from '../adaptation/measurements.js';
import { DEFAULT_PRECOPY, type PrecopyPolicy } from './precopy-policy.js';
import type { CodecPool } from '../pipeline/codec-pool.js';
import { baseChunkReader, vmChunkReader } from '../pipeline/chunk-source.js';
import type { DedupIndex } from '../pipeline/dedup-index.js';
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
import { keepHeldSends, seedTracker } from './reconcile.js';
import { ZERO_PAGE_SHA } from '../memory/page-hash-table.js';
import { stopTrace } from '../stop-trace.js';
import { deferred } from '../deferred.js';
import { InFlightBatches } from './in-flight-batches.js';
import { ModeSampler } from './mode-sampler.js';
import { EpochEncoder, NOT_STARTED } from './epoch-encoder.js';
import { precopyEpochs, type PrecopyOutcome } from './precopy-epochs.js';
import { StreamTally } from './stream-tally.js';
import type { EpochReport, MemoryTracking, PostCopySwitch, ReconcileReport, SourceStopMarks, StageTotals, StateDigests } from '../contract.js';
import { armDirtyLog } from '../memory/dirty-log.js';
import { chunksOf, pageRuns } from '../postcopy/plan.js';
import { encodeStaleDiskHashes, withDiskStopHashes } from '../postcopy/stopped-disk-blocks.js';
import type { StoppedPlan } from '../postcopy/stopped-page-service.js';

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
  memoryTracking: MemoryTracking;
  /** Set when the stream switched to post-copy (its end frame told the target what it holds stale). */
  postCopy: PostCopySwitch | null;
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
  /**
   * Where post-copy is allowed (`precopy.postCopy`): called once the stop-time scan found the
   * pages the target holds stale, and awaited before the end frame: the stopped copy's pages must
   * be served before the commit lets the target run. Resolves to where they are served.
   */
  servePostCopy?: (plan: StoppedPlan) => Promise<{ host: string; port: number }>;
}): Promise<OverlayStreamResult> {
  const { vm, pool, control } = opts;
  const policy = opts.precopy ?? DEFAULT_PRECOPY;
  if (policy.postCopy === 'auto' && !opts.servePostCopy) throw new Error('a stream that may switch to post-copy needs servePostCopy');
  const started = Date.now();
  const memoryBytes = vm.base.manifest.memory.sizeBytes;
  const [ram, baseMemory, baseDisk] = await Promise.all([open(vm.files.ramFile, 'r'), open(vm.base.path('memory'), 'r'), open(vm.base.path('disk'), 'r')]);
  const deviceStateBase = await readFile(vm.base.path('deviceState'));
  const profiler = new StreamProfiler(pool.threads);
  const tally = new StreamTally();
  let lastReportedR: number | null = null;
  const sampler = new ModeSampler({ pool, profiler, control, startedAtMs: started });
  const marks: SourceStopMarks = { pausedAtMs: 0, scannedAtMs: 0, finalEpochEncodedAtMs: 0, deviceStateSavedAtMs: 0, ackedAtMs: 0, digestedAtMs: 0 };
  const inFlight = new InFlightBatches();
  /** The first batch sent after the pause, and the target's ack of it or of a later one. */
  const sincePause = { firstSeq: undefined as number | undefined, answered: deferred<void>() };
  const outcome: PrecopyOutcome = { converged: false, stopReason: '', guestSlowdown: [] };
  vm.heartbeats.resetMaxGap();
  const throttle = new GuestThrottle(vm.host);
  const previous = opts.sentChunks ?? sentChunkCacheFor(policy);
  /** Where the pre-copy stands, carried in every report (what `ehoff watch` shows). */
  let progress = (): PrecopyProgress => NOT_STARTED;
  const report = () => {
    const m = profiler.measurements(control.mode());
    lastReportedR = m.R_Mbps;
    control.report({ ...m, precopy: { ...progress() } });
  };
  const reporter = setInterval(report, REPORT_EVERY_MS);
  try {
    // The pool's threads hash with the same xxHash64 when they scan for changed pages.
    const tracker = MemoryTracker.fromBase(opts.basePageHashes, await loadHash64());
    // Armed before epoch 0's whole scan, which finds what was written before.
    const { log, tracking: memoryTracking } = await armDirtyLog((await vm.host.status()).qemuPid, vm.files.ramFile);
    if (log) tracker.useDirtyLog(log);
    const encoder = new EpochEncoder({
      pool, dedup: opts.dedup, tracker, previous, sampler, profiler, tally, signal: opts.signal,
      source: vmChunkReader(ram, memoryBytes, vm.disk),
      base: baseChunkReader(baseMemory, memoryBytes, baseDisk, vm.base.manifest.disk.sizeBytes),
      // Stopped after converging, the last epoch is small and its time is latency: a cheap
      // mode. Stopped because the guest outran the link, it is large and link-bound: the mode
      // chosen for throughput, min(P, R/r), is the one that gets it across soonest.
      mode: (live) => (live || !outcome.converged ? control.mode() : stopMode(control.mode())),
    });
    progress = () => encoder.progress;
    // A resumed attempt: the tracker learns what the target holds before the first scan, and
    // the disk's first epoch leaves out the blocks it holds as they are here.
    let resumed: { holds: Holdings; reconciled: ReconcileReport } | undefined;
    const reconcile = async (h: Holdings) => {
      await opts.targetAccepted?.();
      const t0 = Date.now();
      const memory = await seedTracker(tracker, ram, memoryBytes, h.memory);
      const baseBlocks = await vm.base.diskBlockHashes();
      keepHeldSends(previous, h, { page: (i) => opts.basePageHashes.sha.sha(i), block: (i) => baseBlocks.get(i) ?? ZERO_PAGE_SHA });
      resumed = {
        holds: h,
        reconciled: {
          memoryPagesHeld: memory.held, memoryPagesKept: memory.kept, diskBlocksHeld: h.disk.indices.length, diskBlocksKept: 0,
          holdingsBytes: encodedHoldingsBytes(h), ms: Date.now() - t0,
        },
      };
    };
    const batches = precopyEpochs({
      vm, tracker, pool, encoder, profiler, tally, sampler, inFlight, throttle, control, policy, marks, outcome,
      startedAtMs: started, resumed: () => resumed, beforePause: opts.beforePause, signal: opts.signal,
    });
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
        batches,
        deviceState: async () => {
          if (!outcome.stopped) throw new Error('the device state was not saved: the VM was never paused');
          const d = await outcome.stopped.deviceState;
          deviceStateBytes = d.length;
          return d;
        },
        // Ready by then: computed right after the final epoch, while the device state is saved.
        deviceStateBase,
        stopState: async () => {
          const { digests, stopped, postCopy } = outcome;
          if (!digests || !stopped) throw new Error('no stop-time digests: the final epoch did not run');
          const state = { ...(await digests), heartbeatAtStop: await stopped.heartbeatAtStop };
          if (!postCopy) return state;
          const { stale, stopped: stoppedState, staleDisk, diskStopped } = postCopy;
          if (!stale || !stoppedState || !staleDisk || !diskStopped) throw new Error('post-copy without the stop-time scan of its stale pages');
          // One chunk space on the page channels: the stale pages, then the stale disk blocks past the memory.
          const memoryPages = vm.base.manifest.memory.sizeBytes / BLOCK_SIZE;
          const chunks = chunksOf(stale, staleDisk, memoryPages);
          const disk = await diskStopped;
          const stopHashes = stoppedState.then((p) => withDiskStopHashes(p.stopHashes, disk));
          const memoryDigest = stoppedState.then((p) => p.memoryDigest);
          // Awaited by whoever needs them (the page frames, the retire); a failure must not go unhandled before.
          for (const p of [stopHashes, memoryDigest]) p.catch(() => undefined);
          const served = await opts.servePostCopy!({ pages: chunks, stopHashes, memoryDigest, capMbps: control.bandwidthCapMbps() });
          return { ...state, postCopy: { staleRuns: pageRuns(stale), ...(staleDisk.length ? { staleDisk: { runs: pageRuns(staleDisk), sha256: encodeStaleDiskHashes(disk.sha256) } } : {}), ...served } };
        },
        capMbps: () => control.bandwidthCapMbps(),
      },
      {
        sent: (b, frameBytes) => {
          if (marks.pausedAtMs) stopTrace(`src batch ${b.seq} ${frameBytes} B ${b.stages.chunks} chunks`);
          if (marks.pausedAtMs && sincePause.firstSeq === undefined) sincePause.firstSeq = b.seq;
          inFlight.sent();
          profiler.recordBatch(b, frameBytes);
          encoder.sent(b);
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
    const stopped = outcome.stopped!;
    const { memoryDigest, diskDigest: disk } = await outcome.digests!;
    const heartbeatAtStop = await stopped.heartbeatAtStop;
    marks.digestedAtMs = Date.now();
    return {
      bytesSent, ack, streamMs: Date.now() - started, stages: tally.stages, modesUsed: tally.modesUsed, epochs: encoder.epochs,
      stopReason: outcome.stopReason, converged: outcome.converged, guestSlowdown: outcome.guestSlowdown, pausedAtMs: marks.pausedAtMs, heartbeatAtStop,
      lastHeartbeatAtMs: stopped.lastHeartbeatAtMs, liveMaxGapMs: stopped.liveMaxGapMs,
      memoryDigest, diskDigest: disk, deviceStateBytes, reconciled: resumed?.reconciled ?? null, stopMarks: marks,
      memoryTracking: tracker.dirtyLogFailure === null ? memoryTracking : { kind: 'hash-scan', why: `the dirty log failed mid-handoff: ${tracker.dirtyLogFailure}` },
      postCopy: outcome.postCopy ? { reason: outcome.postCopy.reason, stalePages: outcome.postCopy.stale?.length ?? 0, stalePagesSentBefore: outcome.postCopy.staleSentBefore ?? 0 } : null,
    };
  } finally {
    await throttle.release();
    clearInterval(reporter);
    sampler.cancel();
    await Promise.allSettled([ram.close(), baseMemory.close(), baseDisk.close()]);
  }
}
