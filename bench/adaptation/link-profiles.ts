/**
 * The changing conditions bench:adaptation hands off under: the link's rate and whether a CPU hog
 * runs on the source cloudlet, as a function of seconds since the handoff started. Pure data and
 * one lookup, so the schedule a run plays is the one its report names.
 */
/** The four run by default; `slow` (5 Mbit/s throughout) on request, for the wire bytes at 5 Mbit/s. */
export const PROFILE_NAMES = ['step', 'square', 'hog', 'constant', 'slow'] as const;
export type ProfileName = (typeof PROFILE_NAMES)[number];

export interface Conditions {
  mbps: number;
  /** A process spinning on one core on the source cloudlet's host. */
  hog: boolean;
}

export interface LinkProfile {
  name: ProfileName;
  /** What the README and the chart say it is. */
  description: string;
  /** The conditions `seconds` after the handoff started. */
  at: (seconds: number) => Conditions;
  /** The moments (s since the start) the conditions change, up to `horizonSeconds`: the player's timetable. */
  changes: (horizonSeconds: number) => number[];
}

/**
 * "Halfway": the step and the hog arrive at a fixed moment, not at half of a duration nobody
 * knows in advance. The defaults put it near the middle of a kvstore handoff of a 1 GiB guest:
 * the 25 Mbit/s link alone moves its ~60 MB in ≈ 20 s, so the step at 10 s leaves half of it to
 * the 5 Mbit/s link; at 10 Mbit/s a handoff takes ≈ 45 s, so the hog comes at 20 s.
 */
export interface ProfileTiming {
  stepAtSeconds: number;
  hogAtSeconds: number;
  /** square: each level held this long. */
  squarePeriodSeconds: number;
}

export const DEFAULT_TIMING: ProfileTiming = { stepAtSeconds: 10, hogAtSeconds: 20, squarePeriodSeconds: 15 };

export function linkProfile(name: ProfileName, timing: ProfileTiming = DEFAULT_TIMING): LinkProfile {
  const once = (t: number) => (horizon: number) => (t <= horizon ? [t] : []);
  switch (name) {
    case 'step':
      return {
        name,
        description: `25 Mbit/s, falling to 5 Mbit/s at ${timing.stepAtSeconds} s`,
        at: (s) => ({ mbps: s < timing.stepAtSeconds ? 25 : 5, hog: false }),
        changes: once(timing.stepAtSeconds),
      };
    case 'square': {
      const p = timing.squarePeriodSeconds;
      return {
        name,
        description: `20 and 8 Mbit/s alternating every ${p} s, starting at 20`,
        at: (s) => ({ mbps: Math.floor(Math.max(0, s) / p) % 2 === 0 ? 20 : 8, hog: false }),
        changes: (horizon) => Array.from({ length: Math.floor(horizon / p) }, (_, i) => (i + 1) * p),
      };
    }
    case 'hog':
      return {
        name,
        description: `10 Mbit/s; a CPU hog takes one core of the source cloudlet at ${timing.hogAtSeconds} s`,
        at: (s) => ({ mbps: 10, hog: s >= timing.hogAtSeconds }),
        changes: once(timing.hogAtSeconds),
      };
    case 'constant':
      return { name, description: '10 Mbit/s throughout', at: () => ({ mbps: 10, hog: false }), changes: () => [] };
    case 'slow':
      return { name, description: '5 Mbit/s throughout', at: () => ({ mbps: 5, hog: false }), changes: () => [] };
  }
}

export function parseProfileNames(raw: string): ProfileName[] {
  const names = raw.split(',').map((s) => s.trim()).filter(Boolean);
  if (names.length === 0) throw new Error('--profiles is empty');
  for (const n of names) {
    if (!(PROFILE_NAMES as readonly string[]).includes(n)) throw new Error(`--profiles: unknown profile '${n}' (${PROFILE_NAMES.join(', ')})`);
  }
  return names as ProfileName[];
}
