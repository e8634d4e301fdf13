import { z } from 'zod';
import { PROFILE_NAMES, type ProfileName } from './link-profiles.js';

/** The policy that adapts; every other policy is a static mode id ("none/zstd-3"). */
export const ADAPTIVE = 'adaptive';

/** One handoff of the benchmark, as the report holds it (read back by the merge). */
export const adaptationRunSchema = z.object({
  profile: z.enum(PROFILE_NAMES),
  /** ADAPTIVE or a static mode id. */
  policy: z.string(),
  /** 1, 2, 3: the repetition. */
  run: z.number().int().positive(),
  totalSeconds: z.number(),
  downtimeSeconds: z.number(),
  wireBytes: z.number(),
  cpuSeconds: z.number(),
  /** Verified at the target and the guest went on: only these count in the medians. */
  completed: z.boolean(),
  converged: z.boolean(),
  modeSwitches: z.array(z.string()),
  note: z.string().optional(),
});
export type AdaptationRun = z.infer<typeof adaptationRunSchema>;

/** One policy under one profile, over its repetitions. */
export interface PolicyCell {
  profile: ProfileName;
  policy: string;
  runs: number;
  completed: number;
  medianSeconds: number | null;
  minSeconds: number | null;
  maxSeconds: number | null;
  medianDowntimeSeconds: number | null;
  medianWireMB: number | null;
  medianCpuSeconds: number | null;
  medianSwitches: number | null;
}

/** The summary line per profile (its names are a contract), with what it is judged by. */
export interface ProfileSummary {
  profile: ProfileName;
  adaptiveSeconds: number | null;
  bestStaticSeconds: number | null;
  bestStaticMode: string | null;
  averageStaticSeconds: number | null;
  adaptiveDowntimeSeconds: number | null;
  /** adaptive / best static median: the target is ≤ 1.10. */
  adaptiveOverBest: number | null;
  /** The target: below the average of the static medians. */
  adaptiveBelowAverage: boolean | null;
}

export function median(xs: number[]): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

export function policyCells(runs: AdaptationRun[]): PolicyCell[] {
  const keys = [...new Set(runs.map((r) => `${r.profile}\u0000${r.policy}`))];
  return keys.map((k) => {
    const [profile, policy] = k.split('\u0000') as [ProfileName, string];
    const all = runs.filter((r) => r.profile === profile && r.policy === policy);
    const ok = all.filter((r) => r.completed);
    const seconds = ok.map((r) => r.totalSeconds);
    return {
      profile,
      policy,
      runs: all.length,
      completed: ok.length,
      medianSeconds: median(seconds),
      minSeconds: seconds.length ? Math.min(...seconds) : null,
      maxSeconds: seconds.length ? Math.max(...seconds) : null,
      medianDowntimeSeconds: median(ok.map((r) => r.downtimeSeconds)),
      medianWireMB: median(ok.map((r) => r.wireBytes / 1e6)),
      medianCpuSeconds: median(ok.map((r) => r.cpuSeconds)),
      medianSwitches: median(ok.map((r) => r.modeSwitches.length)),
    };
  });
}

/**
 * Per profile: the adaptive median against the best static median in hindsight and the average
 * of the static medians. A static mode none of whose runs completed is left out of both (its
 * failures are in the cells); a profile without a completed adaptive run has null figures.
 */
export function summarize(runs: AdaptationRun[]): ProfileSummary[] {
  const cells = policyCells(runs);
  const profiles = [...new Set(runs.map((r) => r.profile))];
  return profiles.map((profile) => {
    const adaptive = cells.find((c) => c.profile === profile && c.policy === ADAPTIVE);
    const statics = cells.filter((c) => c.profile === profile && c.policy !== ADAPTIVE && c.medianSeconds !== null);
    const best = statics.reduce<PolicyCell | undefined>((b, c) => (!b || c.medianSeconds! < b.medianSeconds! ? c : b), undefined);
    const average = statics.length ? statics.reduce((s, c) => s + c.medianSeconds!, 0) / statics.length : null;
    const a = adaptive?.medianSeconds ?? null;
    return {
      profile,
      adaptiveSeconds: a,
      bestStaticSeconds: best?.medianSeconds ?? null,
      bestStaticMode: best?.policy ?? null,
      averageStaticSeconds: average,
      adaptiveDowntimeSeconds: adaptive?.medianDowntimeSeconds ?? null,
      adaptiveOverBest: a !== null && best ? a / best.medianSeconds! : null,
      adaptiveBelowAverage: a !== null && average !== null ? a < average : null,
    };
  });
}

/** The table the benchmark prints and the README quotes: one line per profile and policy. */
export function markdownTable(runs: AdaptationRun[]): string {
  const summaries = summarize(runs);
  const f = (v: number | null, d = 1) => (v === null ? '—' : v.toFixed(d));
  const lines = ['| profile | policy | median s | min–max s | × best static | downtime s | wire MB | CPU s | switches | completed |', '|---|---|---|---|---|---|---|---|---|---|'];
  for (const c of policyCells(runs)) {
    const best = summaries.find((s) => s.profile === c.profile)?.bestStaticSeconds ?? null;
    const ratio = c.medianSeconds !== null && best ? (c.medianSeconds / best).toFixed(2) : '—';
    const name = c.policy === ADAPTIVE ? '**adaptive**' : c.policy;
    lines.push(`| ${c.profile} | ${name} | ${f(c.medianSeconds)} | ${f(c.minSeconds)}–${f(c.maxSeconds)} | ${ratio} | ${f(c.medianDowntimeSeconds, 2)} | ${f(c.medianWireMB)} | ${f(c.medianCpuSeconds)} | ${f(c.medianSwitches, 0)} | ${c.completed}/${c.runs} |`);
  }
  return lines.join('\n');
}
