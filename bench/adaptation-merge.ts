import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { parseArgs } from 'node:util';
import { mergeReports } from './adaptation/merge-reports.js';
import { adaptationReportSchema, writeAdaptationReport, type AdaptationReport } from './adaptation/report.js';
import { markdownTable, summarize } from './adaptation/summary.js';

/**
 * npm run bench:adaptation:merge -- --label NAME docs/bench/a.json docs/bench/b.json …
 *
 * One table and chart from bench:adaptation reports run separately (the whole three-run benchmark
 * is over two hours: its profiles can run apart): a (profile, policy) cell in a later file
 * replaces that cell's runs of the earlier ones. The reports must share the testbed (guest, workload, round
 * trip, warm-up, profile timing), and their commits are listed, so a merge over different code
 * shows it.
 */
const { values, positionals } = parseArgs({ options: { label: { type: 'string' } }, allowPositionals: true });

async function main(): Promise<void> {
  if (!values.label || !/^[a-z0-9-]{1,40}$/.test(values.label)) throw new Error(`--label must be 1-40 lowercase letters, digits or dashes, got '${values.label ?? ''}'`);
  if (positionals.length < 2) throw new Error('give two or more bench:adaptation reports (docs/bench/adaptation-bench*.json), earliest first');
  const reports: Array<{ file: string; report: AdaptationReport }> = [];
  for (const file of positionals) {
    let json: unknown;
    try {
      json = JSON.parse(await readFile(file, 'utf8'));
    } catch (err) {
      throw new Error(`${file} is not a bench:adaptation report: ${err instanceof Error ? err.message : String(err)}`);
    }
    const parsed = adaptationReportSchema.safeParse(json);
    if (!parsed.success) throw new Error(`${file} is not a bench:adaptation report: ${parsed.error.issues[0]?.path.join('.')}: ${parsed.error.issues[0]?.message}`);
    reports.push({ file, report: parsed.data });
  }
  const { runs, details, profiles, staticModes, sources } = mergeReports(reports.map((r) => ({ ...r, file: basename(r.file) })));
  const commits = new Set(sources.filter((s) => s.profiles.length > 0).map((s) => s.commit));
  if (commits.size > 1) console.error(`note: the merged runs come from ${commits.size} commits: ${[...commits].join(', ')}`);
  if (runs.length === 0) throw new Error('the reports hold no runs');
  const perPolicy = Math.max(...runs.map((r) => r.run));
  await writeAdaptationReport(`adaptation-bench-${values.label}`, {
    ...reports[0]!.report, generatedAt: new Date().toISOString(), commit: [...commits].join(' '), runsPerPolicy: perPolicy,
    profiles, staticModes, runs, details, sources,
  });
  console.log(markdownTable(runs));
  for (const s of summarize(runs)) console.error(`${s.profile}: adaptive ×${s.adaptiveOverBest?.toFixed(2) ?? '—'} of ${s.bestStaticMode ?? '—'}, ${s.adaptiveBelowAverage ? 'below' : 'not below'} the average static`);
  console.error(`wrote docs/bench/adaptation-bench-${values.label}.json and .svg from ${reports.length} reports`);
}

main().catch((err) => {
  console.error(`bench:adaptation:merge failed: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
