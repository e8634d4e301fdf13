import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { REPO_ROOT } from '../../infra/paths.js';
import { totalTimeChart } from './chart-svg.js';

/** `handoff`: the default policy with post-copy allowed (the hybrid); `handoff-precopy`: pre-copy only. */
export const SYSTEMS = ['handoff', 'handoff-precopy', 'qemu-tuned', 'qemu-classic', 'floor'] as const;
export type System = (typeof SYSTEMS)[number];

/** One row of the table; a schema, because the merge tool reads rows back from report files. */
export const benchRowSchema = z.object({
  workload: z.string(),
  mbps: z.number(),
  system: z.enum(SYSTEMS),
  totalSeconds: z.number(),
  downtimeSeconds: z.number().nullable(),
  guestGapSeconds: z.number().nullable(),
  wireBytes: z.number(),
  cpuSeconds: z.number().nullable(),
  /** False when the run hit its cap: totalSeconds is then a lower bound. */
  completed: z.boolean(),
  /** The guest beat on at the target past its last heartbeat at the source (null: not measured). */
  guestContinued: z.boolean().nullable(),
  note: z.string().optional(),
  /** A handoff that switched to post-copy: pages fetched after the resume, of them on demand, and a fault's median wait (ms). */
  postCopy: z.object({ stalePages: z.number(), remoteFaults: z.number(), faultLatencyMedianMs: z.number().nullable() }).optional(),
});
export type BenchRow = z.infer<typeof benchRowSchema>;

/** What a run writes to docs/bench/<name>.json (the chart is drawn from its rows). */
export interface BenchReport {
  generatedAt: string;
  /** False while the run is still going (the report is rewritten after every cell). */
  finished: boolean;
  wallSeconds: number;
  memoryMiB: number;
  warmupSeconds: number;
  rttMs: number;
  systems: readonly System[];
  rows: BenchRow[];
  details: Record<string, unknown>[];
  floors?: Record<string, unknown>;
  /** A merged report: which run each row came from. */
  sources?: Array<{ file: string; generatedAt: string; rows: number }>;
}

export const BENCH_DIR = join(REPO_ROOT, 'docs', 'bench');

export async function writeReportFiles(name: string, report: BenchReport): Promise<void> {
  await mkdir(BENCH_DIR, { recursive: true });
  await writeFile(join(BENCH_DIR, `${name}.json`), JSON.stringify(report, null, 2) + '\n');
  const bars = report.rows.map((row) => ({ group: `${row.workload} @ ${row.mbps} Mbit/s`, series: row.system, seconds: row.totalSeconds, lowerBound: !row.completed }));
  const title = `VM handoff over a tc-shaped WAN${report.rttMs > 0 ? `, ${report.rttMs} ms RTT` : ''}: total time (${report.memoryMiB >= 1024 ? `${report.memoryMiB / 1024} GiB` : `${report.memoryMiB} MiB`} guest, 8 GiB disk)`;
  await writeFile(join(BENCH_DIR, `${name}.svg`), totalTimeChart(title, [...report.systems], bars));
}

/** The README's table: one line per cell and system, with the handoff's ratios to the others. */
export function markdownTable(rows: BenchRow[]): string {
  const lines = ['| workload | Mbit/s | system | total s | × handoff | downtime s (host) | guest gap s | wire MB | CPU s | guest went on |', '|---|---|---|---|---|---|---|---|---|---|'];
  for (const r of rows) {
    const h = rows.find((x) => x.workload === r.workload && x.mbps === r.mbps && x.system === 'handoff');
    const ratio = h ? (r.totalSeconds / h.totalSeconds).toFixed(2) : '—';
    const s = (v: number | null) => (v === null ? '—' : v.toFixed(2));
    lines.push(`| ${r.workload} | ${r.mbps} | ${r.system} | ${r.completed ? '' : '≥ '}${r.totalSeconds.toFixed(1)} | ${r.completed ? '' : '≥ '}${ratio} | ${s(r.downtimeSeconds)} | ${s(r.guestGapSeconds)} | ${(r.wireBytes / 1e6).toFixed(1)} | ${r.cpuSeconds?.toFixed(1) ?? '—'} | ${r.guestContinued === null ? '—' : r.guestContinued ? 'yes' : '**no**'} |`);
  }
  return lines.join('\n');
}
