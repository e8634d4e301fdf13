import { BLOCK_SIZE } from '../blocks.js';
import type { CodecPool } from './codec-pool.js';
import type { ChunkRecord, Space } from './chunk-records.js';
import type { ChunkReader } from './chunk-source.js';
import type { DedupIndex } from './dedup-index.js';
import type { SentChunkCache } from './sent-chunk-cache.js';
import type { EncodedPayload } from './encode-worker.js';

/** Input chunks per batch: 256 × 4 KiB = 1 MiB, the unit of compression and of mode switches. */
export const CHUNKS_PER_BATCH = 256;

export interface ChunkList {
  space: Space;
  indices: number[];
}

export interface StageCounts {
  chunks: number;
  zero: number;
  baseRefs: number;
  selfRefs: number;
  data: number;
  /** Of the data chunks, those sent as their XOR with what this overlay sent for them before. */
  againstPrevious: number;
}

export interface EncodedBatch extends EncodedPayload {
  seq: number;
  /** Bytes of overlay this batch stands for (chunks × 4 KiB). */
  inputBytes: number;
  stages: StageCounts;
  /** Main-thread time spent reading and classifying this batch's chunks (zero/dedup). */
  classifyMs: number;
}

export interface EncoderOptions {
  pool: CodecPool;
  dedup: DedupIndex;
  source: ChunkReader;
  base: ChunkReader;
  /** Consulted per batch: a mode switch applies from the next batch on. */
  currentMode: () => string;
  /** Batches in flight at most; bounds memory whatever the overlay's size. */
  window?: number;
  /** Sees each batch's records before encoding (the sampler tries other modes on them). */
  onClassified?: (records: ChunkRecord[]) => void;
  /** Sees each chunk's bytes as read for sending (pre-copy remembers what the target will hold). */
  onChunkRead?: (space: Space, index: number, data: Buffer) => void;
  /**
   * What this overlay sent before, across its epochs: a chunk found there goes as its XOR with
   * it, and every chunk sent is recorded (or forgotten, if it does not go as data).
   */
  previous?: SentChunkCache;
}

/**
 * capture → zero/dedup → delta → compress, in order. Reading and dedup run here; delta and
 * compression run on the pool, several batches at once; batches come out in sequence.
 */
export async function* encodeOverlay(lists: Iterable<ChunkList> | AsyncIterable<ChunkList>, opts: EncoderOptions): AsyncGenerator<EncodedBatch> {
  const window = opts.window ?? opts.pool.threads * 2;
  const inFlight: Array<Promise<EncodedBatch>> = [];
  let seq = 0;
  for await (const batch of classifiedBatches(lists, opts)) {
    const mySeq = seq++;
    opts.onClassified?.(batch.records);
    const modeId = opts.currentMode();
    const job = opts.pool
      .encode({ modeId, records: batch.records })
      .then((p) => ({ ...p, seq: mySeq, inputBytes: batch.stages.chunks * BLOCK_SIZE, stages: batch.stages, classifyMs: batch.classifyMs }));
    job.catch(() => undefined);
    inFlight.push(job);
    if (inFlight.length >= window) yield await inFlight.shift()!;
  }
  while (inFlight.length) yield await inFlight.shift()!;
}

async function* classifiedBatches(lists: Iterable<ChunkList> | AsyncIterable<ChunkList>, opts: EncoderOptions): AsyncGenerator<{ records: ChunkRecord[]; stages: StageCounts; classifyMs: number }> {
  const data = Buffer.alloc(CHUNKS_PER_BATCH * BLOCK_SIZE);
  const base = Buffer.alloc(CHUNKS_PER_BATCH * BLOCK_SIZE);
  let records: ChunkRecord[] = [];
  let stages = emptyStages();
  let since = performance.now();
  // Lists may arrive while they are still being found (the stop-time scan, share by share).
  for await (const { space, indices } of lists) {
    for (let k = 0; k < indices.length; k += CHUNKS_PER_BATCH) {
      const slice = indices.slice(k, k + CHUNKS_PER_BATCH);
      await Promise.all([opts.source.read(space, slice, data), opts.base.read(space, slice, base)]);
      for (const [n, index] of slice.entries()) {
        const at = (b: Buffer) => b.subarray(n * BLOCK_SIZE, (n + 1) * BLOCK_SIZE);
        opts.onChunkRead?.(space, index, at(data));
        const r = await opts.dedup.classify({ space, index }, at(data), at(base), opts.source, opts.base);
        if (opts.previous) againstPrevious(r, opts.previous);
        records.push(r);
        stages.chunks++;
        if (r.kind === 'zero') stages.zero++;
        else if (r.kind === 'base-ref') stages.baseRefs++;
        else if (r.kind === 'self-ref') stages.selfRefs++;
        else {
          stages.data++;
          if (r.against === 'previous') stages.againstPrevious++;
        }
        if (records.length === CHUNKS_PER_BATCH) {
          yield { records, stages, classifyMs: performance.now() - since };
          records = [];
          stages = emptyStages();
          since = performance.now();
        }
      }
    }
  }
  if (records.length) yield { records, stages, classifyMs: performance.now() - since };
}

function emptyStages(): StageCounts {
  return { chunks: 0, zero: 0, baseRefs: 0, selfRefs: 0, data: 0, againstPrevious: 0 };
}

/** Makes a data record relative to the chunk's previous send where the cache has it, and keeps the cache what the target holds. */
function againstPrevious(r: ChunkRecord, cache: SentChunkCache): void {
  if (r.kind !== 'data') {
    cache.forget(r.space, r.index);
    return;
  }
  const previous = cache.get(r.space, r.index);
  if (previous) {
    r.base = Buffer.from(previous);
    r.against = 'previous';
  }
  cache.put(r.space, r.index, r.data);
}
