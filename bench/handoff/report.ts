import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
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
  /**
   * Bytes of RAM pages sent more than once, raw (before compression): the handoff's from its
   * epochs (and post-copy pages a live epoch had sent), QEMU's from its RAM counters
   * (qemu-migration.ts). RAM only, for both: QEMU's block mirror counts no resends (the
   * handoff's disk blocks sent again are in the report's details). Absent where not measured.
   */
  resentBytes: z.number().nullable().optional(),
  /** From the resume until the guest's work rate was back to 90% of its rate before (work-rate.ts); a lower bound where `recovered` is false. */
  degraded: z.object({ seconds: z.number(), recovered: z.boolean() }).nullable().optional(),
  /** What a QEMU row really ran, as QEMU reported its settings back. */
  settings: z.string().optional(),
  /**
   * The handoff's workflow failed, and why (its reason says where the VM is): the run records it
   * and goes on with the next row rather than losing hours to one failure. Its figures are then
   * not measured.
   */
  failed: z.string().optional(),
});
export type BenchRow = z.infer<typeof benchRowSchema>;

/** What a run writes to docs/bench/<name>.json (the chart is drawn from its rows). */
export interface BenchReport {
  generatedAt: string;
  /** False while the run is still going (the report is rewritten after every row). */
  finished: boolean;
  /** Measuring time in all: the sum of `segments` for a run resumed after an interruption. */
  wallSeconds: number;
  /** Each invocation that measured into this report (one, unless it was resumed). */
  segments?: Array<{ startedAt: string; seconds: number }>;
  /** The code that measured: a report is resumed only on the same commit, with no local change. */
  code?: { commit: string; dirty: boolean };
  /** The invocation's options: a resumed run takes them from here. */
  options?: BenchOptions;
  memoryMiB: number;
  warmupSeconds: number;
  rttMs: number;
  systems: readonly System[];
  rows: BenchRow[];
  details: Record<string, unknown>[];
  floors?: Record<string, unknown>;
  /** A merged report: which run each row came from. */
  sources?: Array<{ file: string; generatedAt: string; rows: number; commit?: string; wallSeconds?: number; segments?: number }>;
}

/** A report file as the tools that read one back (bench:handoff:merge, bench:handoff:table) need it. */
export const storedReportSchema = z.object({
  generatedAt: z.string(),
  memoryMiB: z.number(),
  warmupSeconds: z.number(),
  rttMs: z.number(),
  rows: z.array(benchRowSchema),
  details: z.array(z.record(z.string(), z.unknown())).default([]),
  floors: z.record(z.string(), z.unknown()).optional(),
  wallSeconds: z.number().default(0),
  segments: z.array(z.unknown()).optional(),
  code: z.object({ commit: z.string(), dirty: z.boolean() }).optional(),
});
export type StoredReport = z.infer<typeof storedReportSchema>;

/** Reads and checks a report file; the error names the file and what is wrong with it. */
export async function readStoredReport(file: string): Promise<StoredReport> {
  try {
    return storedReportSchema.parse(JSON.parse(await readFile(file, 'utf8')));
  } catch (err) {
    throw new Error(`${file}: not a bench:handoff report: ${err instanceof z.ZodError ? err.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ') : (err as Error).message}`);
  }
}

/** What one invocation measures: the matrix and the testbed (bench/handoff-bench.ts parses them). */
export const benchOptionsSchema = z.object({
  quick: z.boolean(),
  workloads: z.array(z.string()).min(1),
  mbps: z.array(z.number()).min(1),
  systems: z.array(z.enum(SYSTEMS)).min(1),
  rttMs: z.number(),
  warmupSeconds: z.number(),
  classicCapFactor: z.number(),
  tunedCapFactor: z.number(),
  memoryMiB: z.number(),
});
export type BenchOptions = z.infer<typeof benchOptionsSchema>;

export const BENCH_DIR = join(REPO_ROOT, 'docs', 'bench');

/** A guest size: <n>K, <n>M or <n>G, in whole 8 KiB; returns MiB (fractional for K). */
export function parseGuestMemory(raw: string): number {
  const m = /^(\d+)([KMG])$/.exec(raw);
  if (!m) throw new Error(`--memory: '${raw}' is not a size like 1048568K, 1024M or 4G`);
  const kib = Number(m[1]) * { K: 1, M: 1024, G: 1024 * 1024 }[m[2] as 'K' | 'M' | 'G'];
  // QEMU rounds -m up to 8 KiB, and the RAM file's size must equal it.
  if (kib % 8 !== 0 || kib < 128 * 1024 || kib > 64 * 1024 * 1024) throw new Error(`--memory: '${raw}' must be a whole number of 8 KiB between 128M and 64G`);
  return kib / 1024;
}

/** A guest size as people say it: "1 GiB", "512 MiB", "1 GiB − 8 KiB". */
export function memoryLabel(memoryMiB: number): string {
  const kib = Math.round(memoryMiB * 1024);
  if (kib % (1024 * 1024) === 0) return `${kib / 1024 / 1024} GiB`;
  if (kib % 1024 === 0) return `${kib / 1024} MiB`;
  const gib = Math.round(kib / 1024 / 1024);
  const short = gib * 1024 * 1024 - kib;
  return gib > 0 && short > 0 && short <= 1024 ? `${gib} GiB − ${short} KiB` : `${kib} KiB`;
}

export async function writeReportFiles(name: string, report: BenchReport): Promise<void> {
  await mkdir(BENCH_DIR, { recursive: true });
  // Whole or not at all: an interrupted run's report is what --resume reads.
  const json = join(BENCH_DIR, `${name}.json`);
  await writeFile(`${json}.partial`, JSON.stringify(report, null, 2) + '\n');
  await rename(`${json}.partial`, json);
  const bars = report.rows.filter((row) => !row.failed).map((row) => ({ group: `${row.workload} @ ${row.mbps} Mbit/s`, series: row.system, seconds: row.totalSeconds, lowerBound: !row.completed }));
  const title = `VM handoff over a tc-shaped WAN${report.rttMs > 0 ? `, ${report.rttMs} ms RTT` : ''}: total time (${memoryLabel(report.memoryMiB)} guest, 8 GiB disk)`;
  await writeFile(join(BENCH_DIR, `${name}.svg`), totalTimeChart(title, [...report.systems], bars));
}

/** The full table: one line per cell and system, with the handoff's ratios to the others. */
export function markdownTable(rows: BenchRow[]): string {
  const lines = [
    '| workload | Mbit/s | system | total s | × handoff | downtime s (host) | guest gap s | degraded s | wire MB | resent MB | remote faults (median ms) | CPU s | guest went on |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const r of rows) {
    if (r.failed) {
      lines.push(`| ${r.workload} | ${r.mbps} | ${r.system} | **failed** | — | — | — | — | — | — | — | — | — |`);
      continue;
    }
    const h = rows.find((x) => x.workload === r.workload && x.mbps === r.mbps && x.system === 'handoff' && !x.failed);
    const ratio = h ? (r.totalSeconds / h.totalSeconds).toFixed(2) : '—';
    const s = (v: number | null | undefined) => (v === null || v === undefined ? '—' : v.toFixed(2));
    const degraded = r.degraded ? `${r.degraded.recovered ? '' : '≥ '}${r.degraded.seconds.toFixed(2)}` : '—';
    const resent = r.resentBytes === null || r.resentBytes === undefined ? '—' : (r.resentBytes / 1e6).toFixed(1);
    const faults = r.postCopy ? `${r.postCopy.remoteFaults} (${r.postCopy.faultLatencyMedianMs ?? '—'})` : '—';
    lines.push(
      `| ${r.workload} | ${r.mbps} | ${r.system} | ${r.completed ? '' : '≥ '}${r.totalSeconds.toFixed(1)} | ${r.completed ? '' : '≥ '}${ratio} | ${s(r.downtimeSeconds)} | ${s(r.guestGapSeconds)} | ${degraded} | ${(r.wireBytes / 1e6).toFixed(1)} | ${resent} | ${faults} | ${r.cpuSeconds?.toFixed(1) ?? '—'} | ${r.guestContinued === null ? '—' : r.guestContinued ? 'yes' : '**no**'} |`,
    );
  }
  return lines.join('\n');
}
