import { Worker } from 'node:worker_threads';
import { replayCommand } from './report.js';
import type { FuzzSettings } from './settings.js';
import { SLOT, SLOTS, TEXT_BYTES, type WatchdogData } from './watchdog-slots.js';

/** Resident memory is sampled this often: a bomb takes hundreds of milliseconds to inflate. */
const SAMPLE_MS = 20;

/**
 * The main thread's side of the watchdog (see watchdog-thread.mjs): it says which case runs and
 * how to replay it, and reads the memory peaks the thread sampled.
 */
export class Watchdog {
  private readonly state: Float64Array;
  private readonly text: Uint8Array;
  private failure?: Error;

  private constructor(private readonly worker: Worker, slots: SharedArrayBuffer, text: SharedArrayBuffer) {
    this.state = new Float64Array(slots);
    this.text = new Uint8Array(text);
  }

  static async start(settings: FuzzSettings): Promise<Watchdog> {
    const slots = new SharedArrayBuffer(SLOTS * Float64Array.BYTES_PER_ELEMENT);
    const text = new SharedArrayBuffer(TEXT_BYTES);
    new Float64Array(slots).set([-1, 0, process.memoryUsage.rss(), 0, 0]);
    const replayPrefix = replayCommand(settings.seed, settings.socketEvery, 0).replace(/0$/, '');
    const data: WatchdogData = { slots, slot: SLOT, text, replayPrefix, stuckBoundMs: settings.stuckBoundMs, rssKillBytes: settings.rssKillBytes, sampleMs: SAMPLE_MS };
    const worker = new Worker(new URL('./watchdog-thread.mjs', import.meta.url), { workerData: data });
    await new Promise<void>((resolve, reject) => {
      worker.once('online', resolve);
      worker.once('error', reject);
    });
    const watchdog = new Watchdog(worker, slots, text);
    // Without it the run would go on unguarded and report a peak it never sampled.
    worker.on('error', (err) => (watchdog.failure ??= err));
    return watchdog;
  }

  caseStarted(index: number, description: string): void {
    const written = Buffer.from(description).subarray(0, TEXT_BYTES);
    this.text.set(written);
    this.state[SLOT.textLength] = written.length;
    this.state[SLOT.casePeakRss] = process.memoryUsage.rss();
    this.state[SLOT.caseStartedAt] = Date.now();
    this.state[SLOT.caseIndex] = index;
  }

  /** The running case's peak resident memory, sampled and now. */
  caseEnded(): { casePeakRss: number } {
    if (this.failure) throw new Error(`the fuzz watchdog thread failed: ${this.failure.message}`);
    this.state[SLOT.caseIndex] = -1;
    const now = process.memoryUsage.rss();
    this.state[SLOT.peakRss] = Math.max(this.state[SLOT.peakRss]!, now);
    return { casePeakRss: Math.max(this.state[SLOT.casePeakRss]!, now) };
  }

  peakRss(): number {
    return Math.max(this.state[SLOT.peakRss]!, process.memoryUsage.rss());
  }

  async stop(): Promise<void> {
    await this.worker.terminate();
  }
}
