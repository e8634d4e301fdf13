import { setTimeout as sleep } from 'node:timers/promises';
import type { Heartbeat, HeartbeatWatch } from '../../engine/vm/heartbeat-watch.js';
import { degradation, rateCurve, type Degradation, type WorkSample } from './work-rate.js';

/** The longest a benchmark watches a moved guest for its work rate to come back. */
const WATCH_MS = 30_000;
/** Seconds of the rate curve kept after the resume, past the recovery. */
const CURVE_PAST_RECOVERY_S = 3;
const POLL_MS = 250;

const samples = (beats: readonly Heartbeat[]): WorkSample[] => beats.flatMap((b) => (b.work === null ? [] : [{ atMs: b.atMs, work: b.work }]));

/**
 * Watches the guest at the target (a watch made with `keep`) until its work rate is back to the
 * recovered share of the rate before the handoff (work-rate.ts), or WATCH_MS have passed since
 * the resume; reads the rate before from the source's watch.
 */
export async function awaitRecovery(o: { before: HeartbeatWatch; after: HeartbeatWatch; handoffStartedAtMs: number; resumedAtMs: number }): Promise<RecoveryWatched> {
  const measure = () => degradation({ before: samples(o.before.seen), after: samples(o.after.seen), handoffStartedAtMs: o.handoffStartedAtMs, resumedAtMs: o.resumedAtMs, watchedUntilMs: Date.now() });
  let d = measure();
  while (d.kind === 'not-recovered' && Date.now() - o.resumedAtMs < WATCH_MS) {
    await sleep(POLL_MS);
    d = measure();
  }
  if (d.kind === 'unmeasured') return d;
  // A few seconds past the recovery, so the curve shows it held.
  const seconds = Math.min(WATCH_MS / 1000, Math.ceil(d.seconds) + CURVE_PAST_RECOVERY_S);
  const until = o.resumedAtMs + seconds * 1000;
  if (d.kind === 'recovered') await sleep(Math.max(0, until + POLL_MS - Date.now()));
  return { ...d, rateAfter: rateCurve(samples(o.after.seen), o.resumedAtMs, seconds) };
}

/** A degradation with the guest's work rate second by second after the resume, where it was measured. */
export type RecoveryWatched = Degradation & { rateAfter?: Array<number | null> };
