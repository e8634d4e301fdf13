import type { EncodedBatch } from '../pipeline/overlay-encoder.js';
import type { BatchAck } from '../wire/frames.js';
import type { ModeMeasurement, StreamMeasurements } from './measurements.js';
import type { ModeId } from './mode.js';

interface ModeTotals {
  inBytes: number;
  outBytes: number;
  busyMs: number;
  from: 'stream' | 'sample';
}

/** Older figures fade: each new measurement of a mode weighs this much against its history. */
const NEW_WEIGHT = 0.5;
/** Bytes in flight above which the link counts as busy, so acks measure its capacity. */
const BUSY_INFLIGHT_BYTES = 128 * 1024;
const R_WINDOW_MS = 3_000;
/**
 * The rate the stop is planned at is one the link kept over this long: a pre-copy that stops on
 * the last three seconds' rate breaks its downtime budget when the link falls during the stop.
 */
const STOP_R_WINDOW_MS = 15_000;
/** …in slots of this length, of which the low quantile counts… */
const STOP_R_SLOT_MS = 1_000;
const STOP_R_QUANTILE = 0.2;
/** …once this many slots saw the link busy (before that, the last window's R). */
const STOP_R_MIN_SLOTS = 3;
/** The first batches of a stream pay for thread and JIT warm-up: their P is not a measurement. */
const WARMUP_BATCHES = 2;

/**
 * Online measurement of P and r per mode (from the stream's own batches and from background
 * samples) and of R (from the target's acknowledgements while the link was kept busy).
 */
export class StreamProfiler {
  private readonly modes = new Map<ModeId, ModeTotals>();
  private sentBytes = 0;
  private inputBytes = 0;
  private lastAck: { t: number; bytes: number } | undefined;
  private readonly busyIntervals: Array<{ t: number; dt: number; bytes: number }> = [];
  private lastR: number | null = null;
  /** Reading + zero/dedup on the main thread, input bytes and ms: it bounds every mode's P. */
  private classify = { inBytes: 0, ms: 0 };
  private batchesSeen = 0;

  constructor(
    readonly threads: number,
    private readonly now: () => number = () => Date.now(),
    private readonly startedAt = now(),
  ) {}

  recordBatch(b: EncodedBatch, frameBytes: number): void {
    this.sentBytes += frameBytes;
    this.inputBytes += b.inputBytes;
    if (++this.batchesSeen <= WARMUP_BATCHES) return;
    const keep = this.classify.inBytes > 0 ? ((1 - NEW_WEIGHT) / NEW_WEIGHT) * (b.inputBytes / this.classify.inBytes) : 0;
    this.classify = { inBytes: this.classify.inBytes * keep + b.inputBytes, ms: this.classify.ms * keep + b.classifyMs };
    this.record(b.modeId, b.inputBytes, b.payload.length, b.busyMs, 'stream');
  }

  recordSample(mode: ModeId, inBytes: number, outBytes: number, busyMs: number): void {
    this.record(mode, inBytes, outBytes, busyMs, 'sample');
  }

  recordAck(ack: BatchAck): void {
    const t = this.now();
    if (this.lastAck) {
      const inflight = this.sentBytes - ack.bytesReceived;
      const dt = t - this.lastAck.t;
      if (inflight > BUSY_INFLIGHT_BYTES && dt > 0) this.busyIntervals.push({ t, dt, bytes: ack.bytesReceived - this.lastAck.bytes });
    }
    this.lastAck = { t, bytes: ack.bytesReceived };
    while (this.busyIntervals.length && this.busyIntervals[0]!.t < t - STOP_R_WINDOW_MS) this.busyIntervals.shift();
    const recent = this.busyIntervals.filter((x) => x.t >= t - R_WINDOW_MS);
    const dt = recent.reduce((s, x) => s + x.dt, 0);
    if (dt >= 200) this.lastR = (recent.reduce((s, x) => s + x.bytes, 0) * 8) / 1e6 / (dt / 1000);
  }

  /** Mbit/s, or null before the link has been seen busy. */
  R_Mbps(): number | null {
    return this.lastR;
  }

  /**
   * The link rate to plan the stop at, Mbit/s: the low quantile of what the link carried per
   * second while busy over the last STOP_R_WINDOW_MS, and never above the current R. Null before
   * the link has been seen busy.
   */
  stopR_Mbps(): number | null {
    if (this.lastR === null) return null;
    const slots = new Map<number, { bytes: number; dt: number }>();
    for (const x of this.busyIntervals) {
      const slot = Math.floor(x.t / STOP_R_SLOT_MS);
      const s = slots.get(slot) ?? { bytes: 0, dt: 0 };
      s.bytes += x.bytes;
      s.dt += x.dt;
      slots.set(slot, s);
    }
    const rates = [...slots.values()].filter((s) => s.dt >= STOP_R_SLOT_MS / 5).map((s) => (s.bytes * 8) / 1e6 / (s.dt / 1000)).sort((a, b) => a - b);
    if (rates.length < STOP_R_MIN_SLOTS) return this.lastR;
    return Math.min(this.lastR, rates[Math.floor(STOP_R_QUANTILE * (rates.length - 1))]!);
  }

  measurements(current: ModeId): StreamMeasurements {
    // Classification and the pool run side by side: a mode goes as fast as the slower of the two.
    const classifyMBps = this.classify.ms > 0 ? this.classify.inBytes / 1e6 / (this.classify.ms / 1000) : Infinity;
    const modes: ModeMeasurement[] = [...this.modes.entries()]
      .filter(([, m]) => m.busyMs > 0 && m.inBytes > 0)
      .map(([mode, m]) => ({
        mode,
        P_MBps: round(Math.min(classifyMBps, (m.inBytes / 1e6 / (m.busyMs / 1000)) * this.threads)),
        ratio: round(m.outBytes / m.inBytes, 4),
        from: m.from,
        bytes: Math.round(m.inBytes),
      }));
    return {
      atMs: this.now() - this.startedAt,
      mode: current,
      R_Mbps: this.lastR === null ? null : round(this.lastR),
      threads: this.threads,
      inputBytes: this.inputBytes,
      wireBytes: this.sentBytes,
      modes,
    };
  }

  private record(mode: ModeId, inBytes: number, outBytes: number, busyMs: number, from: 'stream' | 'sample'): void {
    const m = this.modes.get(mode);
    if (!m) {
      this.modes.set(mode, { inBytes, outBytes, busyMs, from });
      return;
    }
    // Scale the history so the new figure carries NEW_WEIGHT of the mode's estimate.
    const keep = (1 - NEW_WEIGHT) / NEW_WEIGHT * (inBytes / m.inBytes);
    m.inBytes = m.inBytes * keep + inBytes;
    m.outBytes = m.outBytes * keep + outBytes;
    m.busyMs = m.busyMs * keep + busyMs;
    if (from === 'stream') m.from = 'stream';
  }
}

function round(n: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}
