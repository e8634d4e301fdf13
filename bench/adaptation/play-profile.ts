import type { WanTestbed } from '../../infra/wan-testbed.js';
import { startCpuHog, type CpuHog } from './cpu-hog.js';
import type { Conditions, LinkProfile } from './link-profiles.js';

export interface AppliedChange extends Conditions {
  /** Seconds after the start the change was made (the timetable's moment, plus the tc call's delay). */
  atSeconds: number;
}

/**
 * Runs `run` under `profile`: its conditions at 0 are set before it starts, each change at its
 * moment after (the `tc` rate change on every link of the testbed, the hog started or ended),
 * and the hog is always gone when this returns. Returns what `run` returned and the changes made.
 */
export async function playProfile<T>(
  o: { profile: LinkProfile; wan: WanTestbed; horizonSeconds: number; log: (line: string) => void },
  run: () => Promise<T>,
): Promise<{ result: T; applied: AppliedChange[] }> {
  let hog: CpuHog | undefined;
  let mbps = o.wan.mbps;
  const applied: AppliedChange[] = [];
  let startedAt = Date.now();
  const apply = async (c: Conditions) => {
    if (c.mbps !== mbps) await o.wan.setRate(c.mbps);
    mbps = c.mbps;
    if (c.hog && !hog) hog = await startCpuHog();
    if (!c.hog && hog) {
      await hog.stop();
      hog = undefined;
    }
    applied.push({ ...c, atSeconds: (Date.now() - startedAt) / 1000 });
  };
  // One change at a time, in order, even if a tc call is slow.
  let chain = Promise.resolve();
  const timers: NodeJS.Timeout[] = [];
  try {
    await apply(o.profile.at(0));
    startedAt = Date.now();
    applied[0]!.atSeconds = 0;
    for (const t of o.profile.changes(o.horizonSeconds)) {
      timers.push(
        setTimeout(() => {
          chain = chain.then(() => apply(o.profile.at(t))).catch((err) => o.log(`  profile: the change at ${t} s failed: ${(err as Error).message}`));
        }, t * 1000),
      );
    }
    const result = await run();
    return { result, applied };
  } finally {
    for (const t of timers) clearTimeout(t);
    await chain;
    await hog?.stop();
  }
}
