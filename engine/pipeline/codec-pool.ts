import { availableParallelism } from 'node:os';
import { Piscina } from 'piscina';
import type { EncodeTask, EncodedPayload } from './encode-worker.js';
import { digestFromRecords } from '../image/image-digest.js';
import type { ChangedShareTask } from '../memory/memory-tracker.js';
import type { PageRunsTask } from '../memory/page-hash-table.js';

/** Digest ranges start on 4 MiB boundaries, the scan's step, so zero regions skip the same way. */
const DIGEST_ALIGN = 4 << 20;

/**
 * The CPU-heavy stage (delta encoding, compression) on worker threads, one per core by default.
 * Callers keep order themselves (the encoder awaits results in submission order).
 */
export class CodecPool {
  private readonly pool: Piscina;

  constructor(readonly threads = availableParallelism()) {
    this.pool = new Piscina({
      filename: new URL('./encode-worker.ts', import.meta.url).href,
      minThreads: threads,
      maxThreads: threads,
      // Queued work is bounded by its callers (the encoder's window, the sampler's few tasks).
      maxQueue: Infinity,
      idleTimeout: 60_000,
    });
  }

  /** Starts every thread and loads the codecs, so the first real batch is not the one that pays. */
  async warm(): Promise<void> {
    await Promise.all(Array.from({ length: this.threads }, () => this.encode({ modeId: 'none/zstd-1', records: [] })));
  }

  encode(task: EncodeTask): Promise<EncodedPayload> {
    return this.pool.run(task);
  }

  /**
   * The canonical digest of a whole file, its ranges hashed on all threads at once: at the stop
   * this is on the downtime's path, and one thread would take twice as long.
   */
  async digestFile(path: string, sizeBytes: number): Promise<string> {
    return digestFromRecords(sizeBytes, await this.blockHashRecords(path, sizeBytes));
  }

  /** (index, SHA-256) records of a file's non-zero blocks, in order, hashed on all threads. */
  async blockHashRecords(path: string, sizeBytes: number): Promise<Uint8Array[]> {
    const share = Math.ceil(sizeBytes / this.threads / DIGEST_ALIGN) * DIGEST_ALIGN;
    const ranges: Array<Promise<Uint8Array>> = [];
    for (let from = 0; from < sizeBytes; from += share) {
      ranges.push(this.pool.run({ path, sizeBytes, from, to: Math.min(sizeBytes, from + share) }, { name: 'digestShare' }));
    }
    return Promise.all(ranges);
  }

  /** One share of a changed-pages scan (MemoryTracker splits the file over the threads). */
  changedPages(task: ChangedShareTask): Promise<Uint32Array> {
    return this.pool.run(task, { name: 'changedPagesShare' });
  }

  /** Hashes runs of a file's pages into a shared table; resolves to the pages hashed. */
  hashPages(task: PageRunsTask): Promise<number> {
    return this.pool.run(task, { name: 'pageRunsShare' });
  }

  /** Tasks waiting for a thread: above zero, the pool (CPU) is the bottleneck. */
  get queued(): number {
    return this.pool.queueSize;
  }

  async close(): Promise<void> {
    await this.pool.destroy();
  }
}
