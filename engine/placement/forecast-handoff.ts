import { SHRINK } from '../handoff/precopy-policy.js';

/**
 * `ehoff plan`'s prediction: what a handoff of a VM would send, how long it would take and how
 * long the guest would be paused, before anything moves — from the VM's overlay against its base,
 * the rate at which it dirties memory, how well its pages compress and the link's rate, all
 * measured, and the pre-copy's own rule (live epochs until what is left fits the budget).
 */
export interface ForecastInput {
  /** What differs from the base now, raw bytes (memory pages and disk blocks): the first live epoch. */
  overlayBytes: number;
  /** Raw bytes of distinct pages the guest makes different per second, at first. */
  dirtyBytesPerS: number;
  /**
   * Its writable working set: distinct pages dirtied within t saturate at it, W·(1 − e^(−r·t/W)),
   * since a guest rewrites the same pages (null: no saturation seen, r·t).
   */
  workingSetBytes: number | null;
  /** Wire bytes per raw byte in the stream's mode, measured on a sample of the VM's changed pages. */
  wireRatio: number;
  linkBytesPerS: number;
  /** The guest's RAM: no epoch resends more than all of it. */
  memoryBytes: number;
  /** The stop's own cost besides sending (pause, stop-time scan, device state, verify, resume). */
  stopOverheadMs: number;
  /** The steps around the stream (snapshot, negotiate, finish, retire): round trips through Temporal. */
  stepsOverheadS: number;
  downtimeBudgetMs: number;
  maxLiveEpochs: number;
}

export interface HandoffForecast {
  converges: boolean;
  liveEpochs: number;
  wireBytes: number;
  totalS: number;
  downtimeMs: number;
  reason: string;
}

export function forecastHandoff(i: ForecastInput): HandoffForecast {
  const rate = Math.max(1, i.linkBytesPerS);
  const sendS = (raw: number) => (raw * i.wireRatio) / rate;
  const stopMs = (raw: number) => sendS(raw) * 1000 + i.stopOverheadMs;
  const fits = (raw: number) => stopMs(raw) <= i.downtimeBudgetMs;
  let pending = i.overlayBytes;
  let liveS = 0;
  let wireBytes = 0;
  let liveEpochs = 0;
  let reason = '';
  // The first epoch always runs live: everything that differs from the base, while the guest runs.
  do {
    const t = sendS(pending);
    liveS += t;
    wireBytes += pending * i.wireRatio;
    liveEpochs++;
    const next = Math.min(i.memoryBytes, dirtiedWithin(t, i.dirtyBytesPerS, i.workingSetBytes));
    if (next > pending * SHRINK && liveEpochs > 1) {
      pending = next;
      reason = `the guest dirties its pages about as fast as the link drains them (${mb(rate / i.wireRatio)}/s of raw pages): the dirty set stopped shrinking after ${liveEpochs} live epochs (the engine would slow the guest then; this forecast does not)`;
      break;
    }
    pending = next;
  } while (!fits(pending) && liveEpochs < i.maxLiveEpochs);
  if (!reason) reason = fits(pending) ? `after ${liveEpochs} live epoch(s) ${mb(pending)} are left, ${Math.round(stopMs(pending))} ms of stop` : `${i.maxLiveEpochs} live epochs and still ${mb(pending)} left`;
  const downtimeMs = stopMs(pending);
  return {
    converges: fits(pending),
    liveEpochs,
    wireBytes: wireBytes + pending * i.wireRatio,
    totalS: i.stepsOverheadS + liveS + downtimeMs / 1000,
    downtimeMs,
    reason,
  };
}

const mb = (bytes: number) => `${(bytes / 1e6).toFixed(1)} MB`;

/** Distinct bytes dirtied within `t` seconds by a guest that starts at `rate` and rewrites a working set `w`. */
export function dirtiedWithin(t: number, rate: number, w: number | null): number {
  if (w === null) return rate * t;
  if (w <= 0) return 0;
  return w * (1 - Math.exp((-rate * t) / w));
}

/**
 * The saturating curve through two counts of distinct pages dirtied since the same moment:
 * `d1` after `t1`, `d3` after 3·`t1`. With x = e^(−t1·r/W), d3/d1 = 1 + x + x²; no saturation
 * (x → 1) when d3 ≥ 3·d1, all of it at once (x → 0) when d3 ≤ d1.
 */
export function fitDirtyCurve(t1: number, d1: number, d3: number): { rate: number; workingSetBytes: number | null } {
  if (d1 <= 0) return { rate: d3 / (3 * t1), workingSetBytes: d3 > 0 ? null : 0 };
  const ratio = d3 / d1;
  if (ratio >= 3 - 1e-9) return { rate: d3 / (3 * t1), workingSetBytes: null };
  if (ratio <= 1) return { rate: d1 / t1, workingSetBytes: d1 };
  const x = (-1 + Math.sqrt(4 * ratio - 3)) / 2;
  const w = d1 / (1 - x);
  return { rate: (-Math.log(x) * w) / t1, workingSetBytes: w };
}
