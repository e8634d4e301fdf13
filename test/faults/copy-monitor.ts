import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { HEARTBEAT_LINES } from '../../engine/vm/heartbeat-line.js';

/** How often the monitor looks (the figure). */
export const SAMPLE_EVERY_MS = 200;

interface Watched {
  cloudlet: string;
  path: string;
  file?: FileHandle;
  offset: number;
  partial: string;
  /** Every heartbeat counter this cloudlet's copy printed, and when the last new one was seen. */
  counters: Set<number>;
  lastAdvanceAt: number;
  longestSilenceMs: number;
}

/**
 * Watches one VM on every cloudlet, by its guest's heartbeats in each cloudlet's serial log, every
 * 200 ms, without asking any worker: which cloudlets show advancing heartbeats, and whether two
 * ever ran at once. Two copies are caught two ways: both advancing in the same sample, and the
 * same heartbeat counter printed at two cloudlets (two copies resumed from one state both go on
 * from the same count; a handoff's target starts past the source's last).
 */
export class CopyMonitor {
  private readonly watched: Watched[];
  private timer?: NodeJS.Timeout;
  private sampling?: Promise<void>;
  /** The most cloudlets seen advancing in one sample. */
  maxAdvancingTogether = 0;
  /** Counters printed at two cloudlets, with where. */
  readonly duplicates: Array<{ counter: number; cloudlets: string[] }> = [];

  constructor(runDirs: Record<string, string>, readonly vmId: string) {
    this.watched = Object.entries(runDirs).map(([cloudlet, runDir]) => ({
      cloudlet,
      path: join(runDir, 'vms', vmId, 'serial.log'),
      offset: 0,
      partial: '',
      counters: new Set(),
      lastAdvanceAt: 0,
      longestSilenceMs: 0,
    }));
  }

  start(): void {
    this.timer = setInterval(() => {
      this.sampling ??= this.sample().finally(() => (this.sampling = undefined));
    }, SAMPLE_EVERY_MS);
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.sampling;
    await this.sample();
    for (const w of this.watched) await w.file?.close().catch(() => undefined);
  }

  /** The longest a cloudlet's copy was silent between two samples that saw it beat, in ms. */
  longestSilenceMs(cloudlet: string): number {
    return this.watched.find((w) => w.cloudlet === cloudlet)?.longestSilenceMs ?? 0;
  }

  /** Most copies seen running at once: 2 if two cloudlets advanced together or printed one counter. */
  get copiesSeenRunning(): number {
    return Math.max(this.maxAdvancingTogether, this.duplicates.length > 0 ? 2 : 0);
  }

  /** The cloudlets whose copy printed a heartbeat within the last `withinMs`. */
  runningAt(withinMs: number): string[] {
    const now = Date.now();
    return this.watched.filter((w) => now - w.lastAdvanceAt <= withinMs).map((w) => w.cloudlet);
  }

  private async sample(): Promise<void> {
    const now = Date.now();
    let advancing = 0;
    for (const w of this.watched) {
      const fresh = await this.readNew(w);
      if (fresh.length === 0) continue;
      advancing++;
      if (w.lastAdvanceAt > 0) w.longestSilenceMs = Math.max(w.longestSilenceMs, now - w.lastAdvanceAt);
      w.lastAdvanceAt = now;
      for (const c of fresh) {
        w.counters.add(c);
        const elsewhere = this.watched.filter((o) => o !== w && o.counters.has(c)).map((o) => o.cloudlet);
        if (elsewhere.length > 0) this.duplicates.push({ counter: c, cloudlets: [w.cloudlet, ...elsewhere] });
      }
    }
    this.maxAdvancingTogether = Math.max(this.maxAdvancingTogether, advancing);
  }

  /** Heartbeat counters appended to the log since the last read (a log that appears later is read from its start). */
  private async readNew(w: Watched): Promise<number[]> {
    if (!w.file) {
      w.file = await open(w.path, 'r').catch(() => undefined);
      if (!w.file) return [];
    }
    const buf = Buffer.alloc(64 * 1024);
    let text = '';
    for (;;) {
      const { bytesRead } = await w.file.read(buf, 0, buf.length, w.offset).catch(() => ({ bytesRead: 0 }));
      if (bytesRead === 0) break;
      w.offset += bytesRead;
      text += buf.subarray(0, bytesRead).toString('latin1');
    }
    if (!text) return [];
    const lines = (w.partial + text).split('\n');
    w.partial = lines.pop() ?? '';
    return [...lines.join('\n').matchAll(HEARTBEAT_LINES)].map((m) => Number(m[1]));
  }
}
