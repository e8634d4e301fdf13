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
  /** How long the live epoch that just ended took, ms: the time in which the guest dirtied `pendingChunks`. */
  lastEpochMs: number;
}

export type EpochVerdict =
  | { action: 'stop'; converged: boolean; reason: string }
  | { action: 'post-copy'; reason: string }
  | { action: 'slow-guest'; guestPausedShare: number; reason: string }
  | { action: 'continue'; reason: string };

/**
 * What the pre-copy does after a live epoch, and why. Stop once what is left would go within the
 * downtime budget (converged). Where post-copy is allowed, switch to it as soon as the last
 * epoch's pace says the budget will not be reached within the live epochs left (see
 * `epochsToConverge`): resending the working set epoch after epoch only delays a large stop. Else
 * stop after the most live epochs allowed; a dirty set that did not shrink by SHRINK means the
 * guest dirties as fast as the link drains: slow the guest a step more, or stop once it is slowed
 * as far as it may be; otherwise go on.
 */
export function afterLiveEpoch(s: EpochEnd, policy: Pick<PrecopyPolicy, 'downtimeBudgetMs' | 'maxLiveEpochs' | 'postCopy'>): EpochVerdict {
  const left = `${s.pendingChunks} chunks left`;
  if (s.estimateMs <= policy.downtimeBudgetMs) {
    const slowed = s.guestPausedShare > 0 ? ` (guest slowed to ${Math.round((1 - s.guestPausedShare) * 100)}% of its time)` : '';
    return { action: 'stop', converged: true, reason: `converged after ${s.liveEpochs} live epochs${slowed}: ${left}, ~${Math.round(s.estimateMs)} ms to send` };
  }
  if (policy.postCopy === 'auto') {
    const needed = epochsToConverge(s, policy.downtimeBudgetMs);
    if (s.liveEpochs + needed > policy.maxLiveEpochs) {
      const pace = describePace(s);
      const why = needed === Infinity ? 'the pre-copy does not converge' : `converging would take ${needed} more live epochs, past the ${policy.maxLiveEpochs} allowed`;
      return { action: 'post-copy', reason: `post-copy after ${s.liveEpochs} live epochs: ${pace}, so ${why}; ${left}, ~${Math.round(s.estimateMs)} ms to send stopped` };
    }
    return { action: 'continue', reason: `${left}, ~${Math.round(s.estimateMs)} ms to send, over the ${policy.downtimeBudgetMs} ms budget; converging in ~${needed} more live epochs (${describePace(s)})` };
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

/**
 * Live epochs still needed before what is left fits the budget, at the last epoch's pace. In
 * `lastEpochMs` the guest dirtied `pendingChunks`, which take `estimateMs` to send: the next
 * epoch, lasting about that long, leaves q = estimateMs / lastEpochMs of them, and so on
 * geometrically (Clark et al.'s writable working set is what keeps q from falling). Infinity when
 * q does not shrink the set by SHRINK: the guest dirties as fast as the link drains.
 */
export function epochsToConverge(s: Pick<EpochEnd, 'estimateMs' | 'lastEpochMs'>, budgetMs: number): number {
  if (s.estimateMs <= budgetMs) return 0;
  const q = s.estimateMs / Math.max(1, s.lastEpochMs);
  if (q >= SHRINK) return Infinity;
  return Math.ceil(Math.log(budgetMs / s.estimateMs) / Math.log(q));
}

/** The guest's dirty rate against the link's drain rate over the last epoch, for a decision's reason. */
function describePace(s: Pick<EpochEnd, 'pendingChunks' | 'estimateMs' | 'lastEpochMs'>): string {
  const mbps = (ms: number) => ((s.pendingChunks * 4096 * 8) / Math.max(1, ms) / 1e3).toFixed(1);
  return `the guest dirtied ${mbps(s.lastEpochMs)} Mbit/s of pages and the link drains ${mbps(s.estimateMs)} Mbit/s of them`;
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
