import { SHRINK, type PrecopyPolicy } from './precopy-policy.js';

/** Each non-shrinking epoch pauses the guest this much more of the time, up to the maximum. */
export const THROTTLE_STEP = 0.25;
export const MAX_THROTTLE = 0.75;
/** Live epochs at most between the convergence decision and the pause (see `afterDrain`). */
export const MAX_CATCH_UP_EPOCHS = 3;

/** Where the pre-copy stands when a live epoch has ended and the next dirty set is known. */
export interface EpochEnd {
  /** Live epochs sent so far (≥ 1). */
  liveEpochs: number;
  /** Chunks dirtied since the last epoch began: what the next epoch, or the stop, sends. */
  pendingChunks: number;
  /** The dirty set the last epoch started from. */
  previousChunks: number;
  /** `pendingChunks`' estimated send time at the stop, ms. */
  estimateMs: number;
  /** Share of its time the guest is paused now (0: not slowed). */
  guestPausedShare: number;
}

export type EpochVerdict =
  | { action: 'stop'; converged: boolean; reason: string }
  | { action: 'slow-guest'; guestPausedShare: number; reason: string }
  | { action: 'continue'; reason: string };

/**
 * What the pre-copy does after a live epoch, and why. Stop once what is left would go within the
 * downtime budget (converged); stop after the most live epochs allowed; a dirty set that did not
 * shrink by SHRINK means the guest dirties as fast as the link drains: slow the guest a step more,
 * or stop once it is slowed as far as it may be; otherwise go on.
 */
export function afterLiveEpoch(s: EpochEnd, policy: Pick<PrecopyPolicy, 'downtimeBudgetMs' | 'maxLiveEpochs'>): EpochVerdict {
  const left = `${s.pendingChunks} chunks left`;
  if (s.estimateMs <= policy.downtimeBudgetMs) {
    const slowed = s.guestPausedShare > 0 ? ` (guest slowed to ${Math.round((1 - s.guestPausedShare) * 100)}% of its time)` : '';
    return { action: 'stop', converged: true, reason: `converged after ${s.liveEpochs} live epochs${slowed}: ${left}, ~${Math.round(s.estimateMs)} ms to send` };
  }
  if (s.liveEpochs >= policy.maxLiveEpochs) {
    return { action: 'stop', converged: false, reason: `stopped after ${s.liveEpochs} live epochs (the most allowed), ${left}` };
  }
  if (s.pendingChunks > s.previousChunks * SHRINK) {
    if (s.guestPausedShare >= MAX_THROTTLE) {
      return {
        action: 'stop',
        converged: false,
        reason: `not converging even with the guest paused ${Math.round(s.guestPausedShare * 100)}% of the time: ${left} after ${s.liveEpochs} epochs; ended the iterations`,
      };
    }
    const share = Math.min(MAX_THROTTLE, s.guestPausedShare + THROTTLE_STEP);
    return {
      action: 'slow-guest',
      guestPausedShare: share,
      reason: `the dirty set did not shrink (${s.pendingChunks} chunks after ${s.previousChunks}): the guest is paused ${Math.round(share * 100)}% of its time from here`,
    };
  }
  return {
    action: 'continue',
    reason: `${left}, ~${Math.round(s.estimateMs)} ms to send, over the ${policy.downtimeBudgetMs} ms budget; the dirty set shrank from ${s.previousChunks}`,
  };
}

/** Where a converged pre-copy stands after the link drained, before the pause. */
export interface DrainEnd {
  /** Chunks the guest dirtied while the link drained (or during the last catch-up epoch). */
  pendingChunks: number;
  /** The dirty set the last catch-up epoch started from; Infinity before the first. */
  previousChunks: number;
  estimateMs: number;
}

export type DrainVerdict = { action: 'catch-up'; reason: string } | { action: 'pause'; reason: string };

/**
 * After the link drained (converged only): what the guest dirtied meanwhile goes in one more
 * short live epoch, unless it would already go within half the budget or it stopped shrinking.
 * Each one leaves the stopped epoch little more than what changes during the last of them; the
 * stream runs MAX_CATCH_UP_EPOCHS of them at most (it does not scan for another after the last).
 */
export function afterDrain(s: DrainEnd, policy: Pick<PrecopyPolicy, 'downtimeBudgetMs'>): DrainVerdict {
  if (s.estimateMs <= policy.downtimeBudgetMs / 2) return { action: 'pause', reason: `${s.pendingChunks} chunks left, ~${Math.round(s.estimateMs)} ms to send, within half the budget` };
  if (s.pendingChunks > s.previousChunks * SHRINK) return { action: 'pause', reason: `${s.pendingChunks} chunks left after ${s.previousChunks}: catching up does not shrink them` };
  return { action: 'catch-up', reason: `${s.pendingChunks} chunks dirtied while the link drained, ~${Math.round(s.estimateMs)} ms to send: one more live epoch for them` };
}

/** What the final epoch's send time is estimated from. */
export interface StopRateBasis {
  /** The rate the link kept lately (StreamProfiler.stopR_Mbps: its low quantile over 15 s); null where none was measured. */
  stopR_Mbps: number | null;
  /** Compressed / input bytes the final epoch is expected to reach (StreamTally.ratioNow). */
  ratio: number;
  /** The last epoch's chunks and duration: its pace stands in where no link rate is known. */
  lastEpoch: { chunks: number; ms: number } | undefined;
}

/**
 * How long `pendingChunks` would take to send with the VM stopped: their bytes at the expected
 * compression over the rate the link kept lately — a rate that drops during the stop must not
 * break the budget, so not the latest one. Where no rate is measured (a fast link never fills
 * the window), at the last epoch's pace, which then is the pipeline's; with no epoch yet, not
 * estimable (Infinity: nothing stops on it).
 */
export function finalEpochEstimateMs(pendingChunks: number, b: StopRateBasis): number {
  if (b.stopR_Mbps !== null && b.stopR_Mbps > 0) return (pendingChunks * 4096 * b.ratio * 8) / (b.stopR_Mbps * 1e3);
  if (!b.lastEpoch) return Infinity;
  const bytesPerMs = (b.lastEpoch.chunks * 4096) / Math.max(1, b.lastEpoch.ms);
  return (pendingChunks * 4096) / Math.max(bytesPerMs, 1);
}
