import type { StreamMeasurements } from './measurements.js';
import type { ModeId } from './mode.js';

/** Operator's word on the stream, set by signals. */
export interface StreamPolicy {
  pinnedMode: ModeId | null;
  bandwidthCapMbps: number | null;
}

export interface ModeDecision {
  mode: ModeId;
  /** Why, in a sentence an operator reads in the history. */
  reason: string;
  /** The chosen mode's modelled throughput, input MB/s. */
  effectiveMBps: number | null;
}

/**
 * A new mode must beat the current one by this much beyond the doubt about it: a hysteresis so
 * two modes within noise of each other do not trade places every dwell. The doubt itself is
 * measured (StreamProfiler: a sampled mode's spread over its samples). It was 10% when the
 * doubt was a guess; with 64-chunk samples and a 2% margin, bench:adaptation's runs switched to
 * modes a few percent better on samples and worse streamed, and the 10% that cured it kept the
 * stream off zstd-9 (6.5% fewer bytes than zstd-3 on kvstore) under hog and constant, 15% and 6%
 * slower than pinned zstd-9.
 */
export const SWITCH_MARGIN = 0.03;

/**
 * A mode is kept at least this long once chosen. Sampled P and r of modes close in min(P, R/r)
 * wander across the margin (imageproc and fluid runs switched 6+ times, paying each new codec's
 * cold start); a dwell lets the stream's own measurements of the mode settle before it is judged.
 */
export const MIN_DWELL_MS = 5_000;

/**
 * Picks the mode that moves input fastest: for each measured mode, min(P, R / r) with R the
 * network throughput (capped by the operator). Deterministic, so the workflow can run it.
 * `heldMs`: how long `current` has been in use (see MIN_DWELL_MS).
 */
export function chooseMode(m: StreamMeasurements, policy: StreamPolicy, current: ModeId, heldMs = Infinity, opts: { confidence: boolean } = { confidence: true }): ModeDecision {
  if (policy.pinnedMode) return { mode: policy.pinnedMode, reason: `pinned by operator`, effectiveMBps: null };
  if (heldMs < MIN_DWELL_MS) return { mode: current, reason: `kept: in use ${(heldMs / 1000).toFixed(1)} s, less than the ${MIN_DWELL_MS / 1000} s a mode is given`, effectiveMBps: null };
  const R_Mbps = linkRateMbps(m, policy);
  if (R_Mbps === null) return { mode: current, reason: 'network throughput not measured yet', effectiveMBps: null };
  const R_MBps = R_Mbps / 8;
  const effective = (P: number, r: number) => movesMBps(P, r, R_Mbps);
  let best: { mode: ModeId; eff: number; P: number; r: number; bounded: boolean } | undefined;
  let currentEff: number | undefined;
  for (const x of m.modes) {
    if (!(x.P_MBps > 0) || !(x.ratio > 0)) continue;
    // Another mode is judged at the pessimistic end of its measurement (a sample's P may be far
    // off), the current one at its estimate: a switch must win by more than the doubt about it.
    const bounded = opts.confidence && x.mode !== current && x.P_lowMBps !== undefined && x.ratioHigh !== undefined;
    const P = bounded ? x.P_lowMBps! : x.P_MBps;
    const r = bounded ? x.ratioHigh! : x.ratio;
    if (!(P > 0)) continue;
    const eff = effective(P, r);
    if (x.mode === current) currentEff = eff;
    if (!best || eff > best.eff) best = { mode: x.mode, eff, P, r, bounded };
  }
  if (!best) return { mode: current, reason: 'no mode measured yet', effectiveMBps: null };
  const fmt = (n: number) => n.toFixed(n < 10 ? 2 : 1);
  if (best.mode === current || (currentEff !== undefined && best.eff <= currentEff * (1 + SWITCH_MARGIN))) {
    return { mode: current, reason: `kept: within ${SWITCH_MARGIN * 100}% of the best`, effectiveMBps: currentEff ?? null };
  }
  const bound = best.P < R_MBps / best.r ? 'CPU-bound' : 'network-bound';
  return {
    mode: best.mode,
    reason: `min(P, R/r) = ${fmt(best.eff)} MB/s (P ${fmt(best.P)} MB/s, r ${best.r.toFixed(3)}${best.bounded ? ', at the low end of its measurement' : ''}, R ${fmt(R_Mbps)} Mbit/s, ${bound}) beats ${current} at ${currentEff === undefined ? 'unmeasured' : fmt(currentEff) + ' MB/s'}`,
    effectiveMBps: best.eff,
  };
}

/** The link rate a mode is judged at: the measured R, capped by the operator; null if neither is known. */
export function linkRateMbps(m: StreamMeasurements, policy: Pick<StreamPolicy, 'bandwidthCapMbps'>): number | null {
  const cap = policy.bandwidthCapMbps;
  return m.R_Mbps === null ? cap : cap === null ? m.R_Mbps : Math.min(m.R_Mbps, cap);
}

/** What `mode` moves now by its measurements, min(P, R/r) in input MB/s; null if it or R is not measured. */
export function effectiveMBps(m: StreamMeasurements, mode: ModeId, policy: Pick<StreamPolicy, 'bandwidthCapMbps'>): number | null {
  const R_Mbps = linkRateMbps(m, policy);
  const x = m.modes.find((v) => v.mode === mode);
  if (R_Mbps === null || !x || !(x.P_MBps > 0) || !(x.ratio > 0)) return null;
  return movesMBps(x.P_MBps, x.ratio, R_Mbps);
}

/** Input MB/s a mode of processing rate P and ratio r moves over a link of R Mbit/s: min(P, R/r). */
function movesMBps(P_MBps: number, ratio: number, R_Mbps: number): number {
  return Math.min(P_MBps, ratio > 0 ? R_Mbps / 8 / ratio : Infinity);
}
