import { readFileSync } from 'node:fs';

/** A process's resident set, from /proc (another process's: the target worker's). */
function rssOf(pid: number): number {
  const kb = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!kb) throw new Error(`no VmRSS for process ${pid}`);
  return Number(kb[1]) * 1024;
}

/**
 * How much a process's RSS grows over a quiet baseline while something is done to it: sampled
 * every 20 ms, the peak against the baseline's mean.
 */
export class RssSampler {
  private base = 0;
  private peak = 0;
  private timer?: NodeJS.Timeout;

  constructor(private readonly pid: number) {}

  /** Samples for `ms` to set the baseline, then keeps sampling for the peak until stop(). */
  async baseline(ms: number): Promise<void> {
    const samples: number[] = [];
    const until = Date.now() + ms;
    while (Date.now() < until) {
      samples.push(rssOf(this.pid));
      await new Promise((r) => setTimeout(r, 20));
    }
    this.base = samples.reduce((a, b) => a + b, 0) / samples.length;
    this.peak = this.base;
    this.timer = setInterval(() => (this.peak = Math.max(this.peak, rssOf(this.pid))), 20);
  }

  /** Bytes the peak stood above the baseline. */
  stop(): number {
    clearInterval(this.timer);
    this.peak = Math.max(this.peak, rssOf(this.pid));
    return Math.max(0, this.peak - this.base);
  }
}
