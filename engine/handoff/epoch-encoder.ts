import type { PrecopyProgress } from '../adaptation/measurements.js';
import type { ModeId } from '../adaptation/mode.js';
import type { StreamProfiler } from '../adaptation/stream-profiler.js';
import type { EpochReport } from '../contract.js';
import type { MemoryTracker } from '../memory/memory-tracker.js';
import { Space } from '../pipeline/chunk-records.js';
import type { ChunkReader } from '../pipeline/chunk-source.js';
import type { CodecPool } from '../pipeline/codec-pool.js';
import type { DedupIndex } from '../pipeline/dedup-index.js';
import { encodeOverlay, type ChunkList, type EncodedBatch } from '../pipeline/overlay-encoder.js';
import type { SentChunkCache } from '../pipeline/sent-chunk-cache.js';
import type { ModeSampler } from './mode-sampler.js';
import { finalEpochEstimateMs } from './precopy-rule.js';
import type { StreamTally } from './stream-tally.js';

/** Where the pre-copy stands before its first epoch. */
export const NOT_STARTED: Readonly<PrecopyProgress> = { epoch: 0, live: true, epochChunks: null, chunksSent: 0, dirtyBytesPerS: null, predictedDowntimeMs: null };

/**
 * The stream's epochs, one at a time, through the encoder: numbers their batches across the
 * stream, keeps each epoch's record (what the stop rule reads) and the progress every report
 * carries (what `ehoff watch` shows), and tells the profiler how long the sender waited on each
 * batch — the pipeline's pace, when no sample round shared the pool meanwhile.
 */
export class EpochEncoder {
  readonly epochs: EpochReport[] = [];
  progress: PrecopyProgress = { ...NOT_STARTED };
  private seq = 0;
  /** Which chunks an epoch of this stream has sent: a chunk listed again is a resend. */
  private readonly sentOnce: { memory: Uint8Array; disk: Set<number> };

  constructor(
    private readonly o: {
      pool: CodecPool;
      dedup: DedupIndex;
      source: ChunkReader;
      base: ChunkReader;
      tracker: MemoryTracker;
      /** What was last sent per chunk: a chunk sent again goes as its XOR with it. */
      previous: SentChunkCache;
      sampler: ModeSampler;
      profiler: StreamProfiler;
      tally: StreamTally;
      /** The mode each batch of an epoch is encoded in, asked batch by batch. */
      mode: (live: boolean) => ModeId;
      signal?: AbortSignal;
    },
  ) {
    this.sentOnce = { memory: new Uint8Array(o.tracker.pages), disk: new Set() };
  }

  /** Whether an epoch of this stream has sent memory page `index`. */
  sentMemoryPage(index: number): boolean {
    return this.sentOnce.memory[index] === 1;
  }

  /** How long a final epoch of `pending` chunks would take, on this stream's figures (finalEpochEstimateMs). */
  estimateMs(pending: number): number {
    const last = this.epochs.at(-1);
    return finalEpochEstimateMs(pending, {
      stopR_Mbps: this.o.profiler.stopR_Mbps(),
      ratio: this.o.tally.ratioNow(),
      lastEpoch: last && { chunks: last.memoryPages + last.diskBlocks, ms: last.ms },
    });
  }

  /** Epoch `n`'s batches; its record is kept once the last has been taken. */
  async *epoch(n: number, live: boolean, lists: ChunkList[] | AsyncIterable<ChunkList>): AsyncGenerator<EncodedBatch> {
    const { pool, sampler, profiler, tally, tracker } = this.o;
    const t0 = Date.now();
    // A live epoch's chunks are known before it starts (the stopped one's come from a scan as it runs).
    const known = Array.isArray(lists) ? lists.reduce((k, l) => k + l.indices.length, 0) : null;
    const last = this.epochs.at(-1);
    this.progress = {
      epoch: n,
      live,
      epochChunks: known,
      chunksSent: 0,
      // What the guest dirtied while the last epoch was sent, per second of it.
      dirtyBytesPerS: known !== null && last && live ? (known * 4096) / Math.max(0.001, last.ms / 1000) : null,
      predictedDowntimeMs: known !== null && n > 0 ? Math.round(this.estimateMs(known)) : null,
    };
    const mark = tally.epochStarts();
    const sizes = { memoryPages: 0, diskBlocks: 0, resentMemoryPages: 0, resentDiskBlocks: 0 };
    const sentOnce = this.sentOnce;
    const counted = async function* () {
      for await (const list of lists) {
        if (list.space === Space.Memory) {
          sizes.memoryPages += list.indices.length;
          for (const i of list.indices) {
            sizes.resentMemoryPages += sentOnce.memory[i]!;
            sentOnce.memory[i] = 1;
          }
        } else {
          sizes.diskBlocks += list.indices.length;
          for (const i of list.indices) {
            if (sentOnce.disk.has(i)) sizes.resentDiskBlocks++;
            else sentOnce.disk.add(i);
          }
        }
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
      dedup: this.o.dedup.forOverlay({ selfRefs: !live }),
      source: this.o.source,
      base: this.o.base,
      currentMode: () => this.o.mode(live),
      onClassified: (r) => sampler.offer(r),
      onChunkRead: (space, index, data) => {
        if (space === Space.Memory) tracker.sent(index, data);
      },
      previous: this.o.previous,
    })) {
      this.o.signal?.throwIfAborted();
      const got = performance.now();
      yield { ...b, seq: this.seq++ };
      const again = performance.now();
      if (!sampledAtAsk && !sampler.busy && sampler.roundsStarted === roundsAtAsk) profiler.recordDelivery(b.modeId, b.inputBytes, again - asked, got - asked);
      asked = again;
      roundsAtAsk = sampler.roundsStarted;
      sampledAtAsk = sampler.busy;
    }
    this.epochs.push({ epoch: n, live, ...sizes, ms: Date.now() - t0 });
    // Every batch of the epoch has been handed to the sender (it counts them before asking for
    // the next), so the tally holds the whole epoch.
    tally.epochEnded(mark, n, live);
  }

  /** A batch left: the epoch's progress counts its chunks. */
  sent(b: EncodedBatch): void {
    this.progress.chunksSent += b.stages.chunks;
  }
}
