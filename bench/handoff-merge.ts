import { basename } from 'node:path';
import { parseArgs } from 'node:util';
import { cellTable, targetsReport } from './handoff/cell-summary.js';
import { SYSTEMS, markdownTable, readStoredReport, writeReportFiles, type BenchReport, type BenchRow, type StoredReport } from './handoff/report.js';

/**
 * npm run bench:handoff:merge -- --label NAME docs/bench/a.json docs/bench/b.json …
 *
 * One table and chart from several runs of bench:handoff on the same testbed: a row of a later
 * file replaces the same (workload, rate, system) row of an earlier one — e.g. the handoff
 * re-measured alone after a change, against QEMU's and the floor's rows of a longer run. The
 * ratios are recomputed against the handoff row that ends up in each cell, and the merged
 * report names the file each row came from. Runs must share the round trip and guest size.
 */
const { values, positionals } = parseArgs({ options: { label: { type: 'string' } }, allowPositionals: true });

const WORKLOAD_ORDER = ['idle', 'kvstore', 'imageproc', 'fluid', 'logger'];

async function main(): Promise<void> {
  if (!values.label || !/^[a-z0-9-]{1,40}$/.test(values.label)) throw new Error(`--label must be 1-40 lowercase letters, digits or dashes, got '${values.label ?? ''}'`);
  if (positionals.length < 2) throw new Error('give two or more report files (docs/bench/*.json), earliest first');
  const cells = new Map<string, { row: BenchRow; from: string; details: Record<string, unknown>[] }>();
  const sources: NonNullable<BenchReport['sources']> = [];
  let first: StoredReport | undefined;
  for (const file of positionals) {
    const report = await readStoredReport(file);
    first ??= report;
    for (const k of ['rttMs', 'memoryMiB'] as const) {
      if (report[k] !== first[k]) throw new Error(`${file}: ${k} is ${report[k]}, ${positionals[0]} has ${first[k]}: not the same testbed`);
    }
    for (const row of report.rows) {
      const key = `${row.workload}|${row.mbps}|${row.system}`;
      const details = report.details.filter((d) => d['workload'] === row.workload && d['mbps'] === row.mbps && d['system'] === row.system);
      cells.set(key, { row, from: basename(file), details });
    }
    sources.push({
      file: basename(file), generatedAt: report.generatedAt, rows: report.rows.length, wallSeconds: report.wallSeconds,
      ...(report.segments ? { segments: report.segments.length } : {}),
      ...(report.code ? { commit: `${report.code.commit.slice(0, 12)}${report.code.dirty ? ' (local changes)' : ''}` } : {}),
    });
  }
  const order = (r: BenchRow) => [WORKLOAD_ORDER.indexOf(r.workload), r.mbps, SYSTEMS.indexOf(r.system)];
  const merged = [...cells.values()].sort((a, b) => {
    const [x, y] = [order(a.row), order(b.row)];
    return x[0]! - y[0]! || x[1]! - y[1]! || x[2]! - y[2]!;
  });
  for (const s of sources) s.rows = merged.filter((m) => m.from === s.file).length;
  const rows = merged.map((m) => m.row);
  await writeReportFiles(`handoff-bench-${values.label}`, {
    generatedAt: new Date().toISOString(),
    finished: true,
    // The measuring time of every run merged, those whose rows were all replaced included.
    wallSeconds: sources.reduce((t, s) => t + (s.wallSeconds ?? 0), 0),
    memoryMiB: first!.memoryMiB,
    warmupSeconds: first!.warmupSeconds,
    rttMs: first!.rttMs,
    systems: SYSTEMS.filter((s) => rows.some((r) => r.system === s)),
    rows,
    details: merged.flatMap((m) => m.details.map((d) => ({ ...d, from: m.from }))),
    sources,
  });
  console.log(markdownTable(rows));
  console.log(`\n${cellTable(rows)}\n\n${targetsReport(rows)}`);
  console.error(`wrote docs/bench/handoff-bench-${values.label}.json and .svg from ${sources.map((s) => `${s.file} (${s.rows} rows${s.commit ? ` at ${s.commit}` : ''})`).join(', ')}`);
}

main().catch((err) => {
  console.error(`bench:handoff:merge failed: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
