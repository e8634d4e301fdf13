import { ADAPTIVE } from './summary.js';
import type { AdaptationReport } from './report.js';

export interface MergedReports {
  runs: AdaptationReport['runs'];
  details: AdaptationReport['details'];
  profiles: AdaptationReport['profiles'];
  /** The static modes among the merged runs. */
  staticModes: string[];
  /** Each report, the commit it ran and the profiles it gave. */
  sources: Array<{ file: string; generatedAt: string; commit: string; profiles: string[] }>;
}

const testbedOf = (r: AdaptationReport) => JSON.stringify([r.guest, r.rttMs, r.warmupSeconds, r.timing]);
const cellOf = (x: { profile?: unknown; policy?: unknown }) => `${String(x.profile)}\u0000${String(x.policy)}`;

/**
 * Runs of several bench:adaptation reports as one: a (profile, policy) cell in a later report
 * replaces that cell's runs (and their details) in the earlier ones, so the adaptive policy
 * re-run alone replaces only its own runs. Reports from another testbed, and reports of a
 * benchmark that had not finished, are refused.
 */
export function mergeReports(reports: Array<{ file: string; report: AdaptationReport }>): MergedReports {
  const first = reports[0];
  if (!first) throw new Error('no reports to merge');
  for (const { file, report } of reports) {
    if (report.finished === false) throw new Error(`${file} is from a benchmark that had not finished`);
    if (testbedOf(report) !== testbedOf(first.report)) throw new Error(`${file} ran on another testbed than ${first.file} (guest, workload, round trip, warm-up or profile timing differ)`);
  }
  let runs: MergedReports['runs'] = [];
  let details: MergedReports['details'] = [];
  const profiles = new Map<string, AdaptationReport['profiles'][number]>();
  for (const { report } of reports) {
    const superseded = new Set(report.runs.map(cellOf));
    runs = [...runs.filter((r) => !superseded.has(cellOf(r))), ...report.runs];
    details = [...details.filter((d) => !superseded.has(cellOf(d))), ...report.details.filter((d) => superseded.has(cellOf(d)))];
    for (const p of report.profiles) if (report.runs.some((r) => r.profile === p.name)) profiles.set(p.name, p);
  }
  return {
    runs, details, profiles: [...profiles.values()],
    staticModes: [...new Set(runs.map((r) => r.policy).filter((p) => p !== ADAPTIVE))],
    sources: reports.map(({ file, report }) => ({ file, generatedAt: report.generatedAt, commit: report.commit ?? 'unknown', profiles: [...new Set(report.runs.map((r) => r.profile))] })),
  };
}
