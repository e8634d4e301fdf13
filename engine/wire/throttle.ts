import { Transform, type TransformCallback } from 'node:stream';

/**
 * Holds bytes back so the stream never runs faster than `capMbps()` (null: no cap). The cap is
 * read per chunk, so an operator's change applies within one frame.
 */
export class Throttle extends Transform {
  private allowanceStart = Date.now();
  private sentSinceStart = 0;
  private lastCap: number | null = null;

  constructor(private readonly capMbps: () => number | null) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    const cap = this.capMbps();
    if (cap !== this.lastCap) {
      this.lastCap = cap;
      this.allowanceStart = Date.now();
      this.sentSinceStart = 0;
    }
    this.sentSinceStart += chunk.length;
    if (cap === null || cap <= 0) return done(null, chunk);
    const due = this.allowanceStart + (this.sentSinceStart * 8) / (cap * 1e6) * 1000;
    const wait = due - Date.now();
    if (wait <= 0) return done(null, chunk);
    setTimeout(() => done(null, chunk), wait);
  }
}
