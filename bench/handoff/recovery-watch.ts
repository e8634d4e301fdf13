import { setTimeout as sleep } from 'node:timers/promises';
import type { Heartbeat, HeartbeatWatch } from '../../engine/vm/heartbeat-watch.js';
import { degradation, type Degradation, type WorkSample } from './work-rate.js';

/** The longest a benchmark watches a moved guest for its work rate to come back. */
const WATCH_MS = 30_000;
const POLL_MS = 250;

const samples = (beats: readonly Heartbeat[]): WorkSample[] => beats.flatMap((b) => (b.work === null ? [] : [{ atMs: b.atMs, work: b.work }]));

/**
 * Watches the guest at the target (a watch made with `keep`) until its work rate is back to the
 * recovered share of the rate before the handoff (work-rate.ts), or WATCH_MS have passed since
 * the resume; reads the rate before from the source's watch.
 */
export async function awaitRecovery(o: { before: HeartbeatWatch; after: HeartbeatWatch; handoffStartedAtMs: number; resumedAtMs: number }): Promise<Degradation> {
  const measure = () => degradation({ before: samples(o.before.seen), after: samples(o.after.seen), handoffStartedAtMs: o.handoffStartedAtMs, resumedAtMs: o.resumedAtMs, watchedUntilMs: Date.now() });
  for (;;) {
    const d = measure();
    if (d.kind !== 'not-recovered' || Date.now() - o.resumedAtMs >= WATCH_MS) return d;
    await sleep(POLL_MS);
  }
}
