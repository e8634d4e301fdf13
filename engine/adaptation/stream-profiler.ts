import type { EncodedBatch } from '../pipeline/overlay-encoder.js';
import type { BatchAck } from '../wire/frames.js';
import type { ModeMeasurement, StreamMeasurements } from './measurements.js';
import type { ModeId } from './mode.js';

interface ModeTotals {
  inBytes: number;
  outBytes: number;
  busyMs: number;
  from: 'stream' | 'sample';
  /** Measurements taken (batches or samples) and when the last was. */
  count: number;
  lastAtMs: number;
  /**
   * Samples against the mode streamed when they were taken (`ref`), encoded on the same chunks at
   * the same time: output of this mode and of the reference, faded like the totals.
   */
  relative?: { ref: ModeId; out: number; refOut: number; count: number };
  /** The last few samples' pool rates (MB/s over every thread): their spread is the doubt about P. */
  poolRates: number[];
  /** The last few samples' output over the reference's on the same chunks (of `relative.ref`): the doubt about r. */
  outOverReference: number[];
}

/** The streamed mode encoded on a sample's chunks beside the sampled one. */
export interface SampleReference {
  mode: ModeId;
  outBytes: number;
}

/** A batch delivered while the sender waited on the pipeline: the pipeline set the pace. */
interface Delivery {
  t: number;
  inBytes: number;
  cycleMs: number;
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
 * A batch cycle (the sender asking for a batch to it asking for the next) counts as
 * pipeline-bound when the sender spent at least this share of it waiting for the batch.
 */
const PIPELINE_BOUND_SHARE = 0.5;
/** Achieved P is taken over the pipeline-bound cycles of this window… */
const ACHIEVED_WINDOW_MS = 6_000;
/** …once they add up to this much (fewer: the busy-time figure, scaled, stands). */
const ACHIEVED_MIN_MS = 1_000;
/**
 * Relative uncertainty of P and r by where they come from. Achieved P is what happened; a
 * busy-time P extrapolates a batch's pool time to every thread; a sample's P is one batch's
 * and runs beside the stream's own batches. Further samples narrow a sampled mode's doubt (÷√n
 * for the first two, then their own spread: spreadDoubt), age widens it again: conditions change.
 */
const DOUBT = {
  achieved: { P: 0.1, r: 0.05 },
  stream: { P: 0.25, r: 0.05 },
  /** A sample's P: the floor is what a sample's pool time cannot see of the stream's (its reading, its sender). */
  sample: { P: 0.15, r: 0.05, perSampleP: 0.3, perSampleR: 0.15, noContentionP: 0.15 },
  /**
   * r against the streamed mode on the same chunks: the floor is the data still to come, which no
   * sample saw. Two codecs' output on the same whole batch keeps its proportion across kvstore's
   * batches to a percent or two; a floor of 5% (with the margin's 10%) kept the stream off
   * zstd-9 — 6.5% fewer bytes than zstd-3 there — through whole handoffs it would have shortened.
   */
  relative: { r: 0.01, perSampleR: 0.1 },
  agePerMinute: 0.3,
  maxP: 0.9,
};
/**
 * From this many samples on, a mode's doubt is their own spread (SPREAD_T standard errors), not
 * the prior per-sample figure: a codec whose samples agree is trusted sooner, one whose samples
 * scatter later. The last SAMPLES_KEPT count: older ones describe other conditions.
 */
const SPREAD_MIN_SAMPLES = 3;
const SPREAD_T = 2;
const SAMPLES_KEPT = 8;
/**
 * The estimates are faded averages (NEW_WEIGHT): their variance is that of a mean of this many
 * samples however many are kept, so the standard error is taken over at most this many.
 */
const FADED_SAMPLE_COUNT = (2 - NEW_WEIGHT) / NEW_WEIGHT;

/**
 * Online measurement of P and r per mode (from the stream's own batches and from background
 * samples) and of R (from the target's acknowledgements while the link was kept busy).
 */
export class StreamProfiler {
  private readonly modes = new Map<ModeId, ModeTotals>();
  private sentBytes = 0;
  private inputBytes = 0;
  /** The last ack: when, the bytes received by then, and the bytes handed to the link by then. */
  private lastAck: { t: number; bytes: number; sent: number } | undefined;
  private readonly busyIntervals: Array<{ t: number; dt: number; bytes: number }> = [];
  private lastR: number | null = null;
  /** Reading + zero/dedup on the main thread, input bytes and ms: it bounds every mode's P. */
  private classify = { inBytes: 0, ms: 0 };
  private batchesSeen = 0;
  private readonly deliveries = new Map<ModeId, Delivery[]>();

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

  /**
   * A batch the pipeline handed to the sender: `cycleMs` from the sender asking for it to asking
   * for the next, `waitMs` of that spent waiting for it. Only pipeline-bound cycles count.
   */
  recordDelivery(mode: ModeId, inBytes: number, cycleMs: number, waitMs: number): void {
    if (this.batchesSeen <= WARMUP_BATCHES || !(cycleMs > 0) || waitMs < PIPELINE_BOUND_SHARE * cycleMs) return;
    const list = this.deliveries.get(mode) ?? [];
    list.push({ t: this.now(), inBytes, cycleMs });
    this.deliveries.set(mode, list);
  }

  /**
   * A background sample of `mode`. With `reference` (the streamed mode on the same chunks), the
   * mode's ratio is known relative to it: a sample's absolute ratio says more about which chunks
   * it caught than about the mode (one run's samples gave xor/gzip-9 r 0.017 while the stream's
   * none/zstd-3 sent at 0.157), its ratio to the reference on the same chunks less so.
   */
  recordSample(mode: ModeId, inBytes: number, outBytes: number, busyMs: number, reference?: SampleReference): void {
    this.record(mode, inBytes, outBytes, busyMs, 'sample');
    const m = this.modes.get(mode)!;
    if (busyMs > 0) keepLast(m.poolRates, this.poolRateMBps(inBytes, busyMs));
    if (!reference || reference.mode === mode || !(reference.outBytes > 0)) return;
    const r = m.relative?.ref === reference.mode ? m.relative : undefined;
    const keep = r ? 1 - NEW_WEIGHT : 0;
    m.relative = {
      ref: reference.mode,
      out: (r?.out ?? 0) * keep + outBytes,
      refOut: (r?.refOut ?? 0) * keep + reference.outBytes,
      count: (r?.count ?? 0) + 1,
    };
    // Against another reference the earlier proportions do not compare.
    if (!r) m.outOverReference = [];
    keepLast(m.outOverReference, outBytes / reference.outBytes);
  }

  recordAck(ack: BatchAck): void {
    const t = this.now();
    if (this.lastAck) {
      const bytes = ack.bytesReceived - this.lastAck.bytes;
      const dt = t - this.lastAck.t;
      // The link was busy from the last ack to this one only if what it delivered meanwhile was
      // already handed to it then, and more still is now. Without the first condition a slow
      // pipeline's gaps counted as link time: streaming zstd-19 at 2 MB/s over 5 Mbit/s, two
      // frames finished together, the second kept > 128 KB in flight, and R read 1.1–1.8.
      const queuedAtStart = this.lastAck.sent - this.lastAck.bytes;
      const inflight = this.sentBytes - ack.bytesReceived;
      // (10% slack: the target counts a few frames this side does not, its hello among them.)
      if (queuedAtStart >= 0.9 * bytes && inflight > BUSY_INFLIGHT_BYTES && dt > 0) this.busyIntervals.push({ t, dt, bytes });
    }
    this.lastAck = { t, bytes: ack.bytesReceived, sent: this.sentBytes };
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

  /** Input MB per second over the recent pipeline-bound cycles of `mode`; null if too few. */
  private achievedMBps(mode: ModeId): number | null {
    const list = (this.deliveries.get(mode) ?? []).filter((d) => d.t >= this.now() - ACHIEVED_WINDOW_MS);
    this.deliveries.set(mode, list);
    const ms = list.reduce((s, d) => s + d.cycleMs, 0);
    return ms >= ACHIEVED_MIN_MS ? list.reduce((s, d) => s + d.inBytes, 0) / 1e6 / (ms / 1000) : null;
  }

  measurements(current: ModeId): StreamMeasurements {
    // Classification and the pool run side by side: a mode goes as fast as the slower of the two.
    const classifyMBps = this.classify.ms > 0 ? this.classify.inBytes / 1e6 / (this.classify.ms / 1000) : Infinity;
    const measured = [...this.modes.entries()].filter(([, m]) => m.busyMs > 0 && m.inBytes > 0);
    const poolMBps = (m: ModeTotals) => Math.min(classifyMBps, this.poolRateMBps(m.inBytes, m.busyMs));
    // The streamed mode's achieved rate against its busy-time figure: the share of the pool's
    // time the CPU really gives now (the guest's vCPU, QEMU and other handoffs take the rest).
    const streamed = this.modes.get(current);
    const achievedNow = this.achievedMBps(current);
    // Only while it holds: a figure from the first seconds (zero and base pages read from a cold
    // file, the pipeline behind) scaled a hog run's samples to a quarter of their rate for the
    // whole handoff, and kept it on zstd-3 where zstd-9 would have sent 6% less.
    const contention = streamed && streamed.busyMs > 0 && achievedNow !== null ? Math.min(1, Math.max(0.05, achievedNow / poolMBps(streamed))) : null;
    // Own figures first: what the stream achieved, else pool time scaled by that shortfall.
    const own = new Map(
      measured.map(([mode, m]) => {
        const achieved = mode === current ? achievedNow : this.achievedMBps(mode);
        const P = achieved ?? poolMBps(m) * (contention ?? 1);
        return [mode, { P, ratio: m.outBytes / m.inBytes, from: achieved !== null ? ('achieved' as const) : ('pool' as const), doubt: this.doubt(m, contention, { achieved: achieved !== null }) }];
      }),
    );
    const modes: ModeMeasurement[] = measured.map(([mode, m]) => {
      // A mode known from samples beside a streamed reference: its ratio is the reference's,
      // scaled by the two on the same chunks (which chunks a sample caught says little about a
      // mode). Its P stays its own pool time (a whole batch, encoded while the round fills the
      // pool, so its busy time holds what a saturated pool gets of the CPU, which a link-bound
      // reference's does not), with the streamed mode's shortfall like every pool-time figure.
      // Scaling the reference's P by the two codecs' cost read zstd-16 at 1.4–2.7 MB/s beside a
      // link-bound zstd-3 (its P capped at the reading rate; 7–9 achieved streamed), and
      // uncapped read zstd-19 at 7 (2 achieved).
      const rel = m.from === 'sample' ? m.relative : undefined;
      const ref = rel && this.modes.get(rel.ref)?.from === 'stream' ? own.get(rel.ref) : undefined;
      const mine = own.get(mode)!;
      const f = rel && ref
        ? { ...mine, ratio: (ref.ratio * rel.out) / rel.refOut, doubt: this.doubt(m, contention, { achieved: false, relativeSamples: rel.count }) }
        : mine;
      return {
        mode,
        P_MBps: round(f.P),
        ratio: round(f.ratio, 4),
        from: m.from,
        bytes: Math.round(m.inBytes),
        P_from: f.from,
        P_lowMBps: round(f.P * (1 - f.doubt.uP)),
        ratioHigh: round(f.ratio * (1 + f.doubt.ur), 4),
      };
    });
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

  /**
   * Relative uncertainty of a mode's P and r (see DOUBT): `achieved` for the stream's own rate,
   * `relative` with the count of samples taken beside a streamed reference. `contention`: the
   * streamed mode's achieved over pool-time P now, null while the stream is not pipeline-bound.
   */
  private doubt(m: ModeTotals, contention: number | null, basis: { achieved: true } | { achieved: false; relativeSamples?: number }): { uP: number; ur: number } {
    const age = (DOUBT.agePerMinute * (this.now() - m.lastAtMs)) / 60_000;
    const aged = (P: number, r: number) => ({ uP: Math.min(DOUBT.maxP, P + age), ur: r + age / 2 });
    if (basis.achieved) return aged(DOUBT.achieved.P, DOUBT.achieved.r);
    if (m.from === 'stream') return aged(DOUBT.stream.P, DOUBT.stream.r);
    const k = Math.sqrt(m.count);
    const uP = DOUBT.sample.P + spreadDoubt(m.poolRates, DOUBT.sample.perSampleP / k) + (contention === null ? DOUBT.sample.noContentionP : 0);
    if (basis.relativeSamples !== undefined) {
      return aged(uP, DOUBT.relative.r + spreadDoubt(m.outOverReference, DOUBT.relative.perSampleR / Math.sqrt(basis.relativeSamples)));
    }
    return aged(uP, DOUBT.sample.r + DOUBT.sample.perSampleR / k);
  }

  /** Input MB/s of the whole pool, were every thread as busy as this encoding's was for `busyMs`. */
  private poolRateMBps(inBytes: number, busyMs: number): number {
    return (inBytes / 1e6 / (busyMs / 1000)) * this.threads;
  }

  private record(mode: ModeId, inBytes: number, outBytes: number, busyMs: number, from: 'stream' | 'sample'): void {
    const m = this.modes.get(mode);
    const at = this.now();
    if (!m) {
      this.modes.set(mode, { inBytes, outBytes, busyMs, from, count: 1, lastAtMs: at, poolRates: [], outOverReference: [] });
      return;
    }
    m.count++;
    m.lastAtMs = at;
    // Scale the history so the new figure carries NEW_WEIGHT of the mode's estimate.
    const keep = (1 - NEW_WEIGHT) / NEW_WEIGHT * (inBytes / m.inBytes);
    m.inBytes = m.inBytes * keep + inBytes;
    m.outBytes = m.outBytes * keep + outBytes;
    m.busyMs = m.busyMs * keep + busyMs;
    if (from === 'stream') m.from = 'stream';
  }
}

/**
 * Relative doubt about a faded average of `xs` from their own scatter: SPREAD_T standard errors
 * (over at most FADED_SAMPLE_COUNT samples) over their mean. With fewer than SPREAD_MIN_SAMPLES,
 * `prior` (a spread from two figures says little).
 */
export function spreadDoubt(xs: readonly number[], prior: number): number {
  const n = xs.length;
  if (n < SPREAD_MIN_SAMPLES) return prior;
  const mean = xs.reduce((s, x) => s + x, 0) / n;
  if (!(mean > 0)) return prior;
  const variance = xs.reduce((s, x) => s + (x - mean) ** 2, 0) / (n - 1);
  return (SPREAD_T * Math.sqrt(variance)) / mean / Math.sqrt(Math.min(n, FADED_SAMPLE_COUNT));
}

/** Appends `x`, dropping the oldest beyond SAMPLES_KEPT. */
function keepLast(xs: number[], x: number): void {
  xs.push(x);
  if (xs.length > SAMPLES_KEPT) xs.shift();
}

function round(n: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}
