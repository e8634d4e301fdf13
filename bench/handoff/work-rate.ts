/**
 * A guest's work rate around a handoff, from its heartbeats' progress counters as the host saw
 * them arrive (engine/vm/heartbeat-line.ts): what it did per second before the handoff began, and
 * how long after the resume it took to do 90% of that again — the *degraded seconds* of a handoff
 * whose guest runs on with pages still missing (post-copy) or slowed.
 */
export interface WorkSample {
  atMs: number;
  work: number;
}

/** How the rate before the handoff and the recovery after it are read. */
export const WORK_RATE_RULE = {
  /** The rate before: over this long, up to the handoff's start. */
  baselineWindowMs: 10_000,
  /** The rate after: over windows this long, from each beat after the resume. */
  windowMs: 1_000,
  /** Recovered: a window at this share of the rate before. */
  recoveredShare: 0.9,
} as const;

/** Work per second between the first and the last sample inside [fromMs, toMs]; null with under two or under half the span. */
export function workRate(samples: readonly WorkSample[], fromMs: number, toMs: number): number | null {
  const inside = samples.filter((s) => s.atMs >= fromMs && s.atMs <= toMs);
  if (inside.length < 2) return null;
  const first = inside[0]!;
  const last = inside.at(-1)!;
  if (last.atMs - first.atMs < (toMs - fromMs) / 2) return null;
  return ((last.work - first.work) * 1000) / (last.atMs - first.atMs);
}

export type Degradation =
  /** `seconds` from the resume to the start of the first window at the recovered share. */
  | { kind: 'recovered'; seconds: number; rateBefore: number }
  /** Not back within what was watched: `seconds` is a lower bound. */
  | { kind: 'not-recovered'; seconds: number; rateBefore: number }
  | { kind: 'unmeasured'; why: string };

/**
 * Degraded seconds: from the resume until the guest's work rate, over a window of
 * WORK_RATE_RULE.windowMs starting at one of its beats, is back to the recovered share of its rate
 * before the handoff. A guest at full pace from its first beat on counts the time to that beat
 * (it did no work before it either).
 */
export function degradation(
  o: {
    before: readonly WorkSample[];
    after: readonly WorkSample[];
    handoffStartedAtMs: number;
    resumedAtMs: number;
    /** Until when the guest was watched after the resume: a guest whose beats stopped was degraded at least that long. */
    watchedUntilMs?: number;
  },
  rule = WORK_RATE_RULE,
): Degradation {
  const rateBefore = workRate(o.before, o.handoffStartedAtMs - rule.baselineWindowMs, o.handoffStartedAtMs);
  if (rateBefore === null) return { kind: 'unmeasured', why: `fewer than two beats in the ${rule.baselineWindowMs / 1000} s before the handoff` };
  if (rateBefore <= 0) return { kind: 'unmeasured', why: 'the guest did no work before the handoff' };
  const after = o.after.filter((s) => s.atMs >= o.resumedAtMs);
  for (let i = 0, j = 0; i < after.length; i++) {
    j = Math.max(j, i + 1);
    while (j < after.length && after[j]!.atMs - after[i]!.atMs < rule.windowMs) j++;
    if (j >= after.length) break;
    const rate = ((after[j]!.work - after[i]!.work) * 1000) / (after[j]!.atMs - after[i]!.atMs);
    if (rate >= rule.recoveredShare * rateBefore) return { kind: 'recovered', seconds: (after[i]!.atMs - o.resumedAtMs) / 1000, rateBefore };
  }
  const watchedUntil = Math.max(after.at(-1)?.atMs ?? o.resumedAtMs, o.watchedUntilMs ?? 0);
  return { kind: 'not-recovered', seconds: (watchedUntil - o.resumedAtMs) / 1000, rateBefore };
}

/**
 * The work rate in consecutive windows of `windowMs` from `fromMs`, `count` of them (null where a
 * window has too few beats): the curve behind a degraded-seconds figure, kept in a report's
 * details to tell a guest that came back slowly from one that stalled and then ran at full pace.
 */
export function rateCurve(samples: readonly WorkSample[], fromMs: number, count: number, windowMs: number = WORK_RATE_RULE.windowMs): Array<number | null> {
  return Array.from({ length: count }, (_, k) => {
    const rate = workRate(samples, fromMs + k * windowMs, fromMs + (k + 1) * windowMs);
    return rate === null ? null : Math.round(rate * 10) / 10;
  });
}
