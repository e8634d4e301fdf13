import { open, type FileHandle } from 'node:fs/promises';
import { parseHeartbeatLine } from './heartbeat-line.js';
const POLL_MS = 10;

/** A heartbeat as the host saw it arrive. */
export interface Heartbeat {
  counter: number;
  /** The workload's progress counter (heartbeat-line.ts); null from a guest that prints none. */
  work: number | null;
  atMs: number;
}

/**
 * Timestamps the guest's heartbeats as the host sees them arrive on the serial console, by
 * tailing QEMU's serial log. The guest's own clock stops while it is paused, so only the host can
 * tell how long the application was silent across a handoff.
 */
export class HeartbeatWatch {
  private timer?: NodeJS.Timeout;
  private file?: FileHandle;
  private offset = 0;
  private partial = '';
  private reading = false;
  /** The read in flight: `stop` waits for it before it closes the file under it. */
  private polling: Promise<void> = Promise.resolve();
  last: Heartbeat | undefined;
  /** Every heartbeat seen, when the watch was made to keep them (a benchmark's work-rate trace). */
  readonly seen: Heartbeat[] = [];
  /** The longest silence between two heartbeats since `resetMaxGap`. */
  maxGapMs = 0;
  private readonly waiters: Array<{ above: number; resolve: (hb: Heartbeat) => void }> = [];

  constructor(
    private readonly logPath: string,
    /** keep: every beat stays in `seen`; fromStart: read the log from its beginning, not from where it ends now. */
    private readonly opts: { keep?: boolean; fromStart?: boolean } = {},
  ) {}

  async start(): Promise<void> {
    this.file = await open(this.logPath, 'a+').catch(() => undefined);
    if (this.file && !this.opts.fromStart) this.offset = (await this.file.stat()).size;
    this.timer = setInterval(() => {
      // A log that cannot be read costs this tick's heartbeats, not the process.
      if (!this.reading) this.polling = this.poll().catch(() => undefined);
    }, POLL_MS);
    this.timer.unref();
  }

  resetMaxGap(): void {
    this.maxGapMs = 0;
  }

  /** Resolves with the first heartbeat whose counter exceeds `above`; rejects after `timeoutMs`. */
  next(above: number, timeoutMs: number): Promise<Heartbeat> {
    if (this.last && this.last.counter > above) return Promise.resolve(this.last);
    return new Promise((resolve, reject) => {
      const waiter = {
        above,
        resolve: (hb: Heartbeat) => {
          clearTimeout(timer);
          resolve(hb);
        },
      };
      const timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(waiter), 1);
        reject(new Error(`no heartbeat above ${above} on ${this.logPath} within ${timeoutMs} ms (last seen: ${this.last?.counter ?? 'none'})`));
      }, timeoutMs);
      this.waiters.push(waiter);
    });
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.polling;
    await this.file?.close().catch(() => undefined);
  }

  private async poll(): Promise<void> {
    if (this.reading || !this.file) return;
    this.reading = true;
    try {
      const buf = Buffer.alloc(64 * 1024);
      for (;;) {
        const { bytesRead } = await this.file.read(buf, 0, buf.length, this.offset);
        if (bytesRead === 0) break;
        this.offset += bytesRead;
        const now = Date.now();
        const lines = (this.partial + buf.subarray(0, bytesRead).toString('utf8')).split('\n');
        this.partial = lines.pop() ?? '';
        for (const line of lines) {
          const parsed = parseHeartbeatLine(line);
          if (!parsed) continue;
          const hb = { ...parsed, atMs: now };
          if (this.opts.keep) this.seen.push(hb);
          if (this.last) this.maxGapMs = Math.max(this.maxGapMs, now - this.last.atMs);
          this.last = hb;
          for (let i = this.waiters.length - 1; i >= 0; i--) {
            if (hb.counter > this.waiters[i]!.above) this.waiters.splice(i, 1)[0]!.resolve(hb);
          }
        }
      }
    } finally {
      this.reading = false;
    }
  }
}
