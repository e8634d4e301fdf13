import { availableParallelism } from 'node:os';
import { Piscina } from 'piscina';
import type { EncodeTask, EncodedPayload } from './encode-worker.js';

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

  /** Tasks waiting for a thread: above zero, the pool (CPU) is the bottleneck. */
  get queued(): number {
    return this.pool.queueSize;
  }

  async close(): Promise<void> {
    await this.pool.destroy();
  }
}
