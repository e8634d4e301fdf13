import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { z } from 'zod';
import { BENCH_DIR } from '../handoff/report.js';
import { REPO_ROOT } from '../../infra/paths.js';
import { adaptationChart } from './chart-svg.js';
import { PROFILE_NAMES } from './link-profiles.js';
import { adaptationRunSchema, policyCells, summarize, type AdaptationRun } from './summary.js';

/** What a bench:adaptation report holds beside its runs: the testbed they ran on. */
const testbedSchema = z.object({
  guest: z.object({ memoryMiB: z.number(), workload: z.object({ name: z.string(), args: z.array(z.string()) }) }),
  rttMs: z.number(),
  warmupSeconds: z.number(),
  timing: z.object({ stepAtSeconds: z.number(), hogAtSeconds: z.number(), squarePeriodSeconds: z.number() }),
});

/** A report as bench:adaptation writes it, read back (by the merge). */
export const adaptationReportSchema = testbedSchema.extend({
  generatedAt: z.string(),
  /** The commit the handoffs ran (absent in reports from before it was recorded). */
  commit: z.string().optional(),
  profiles: z.array(z.object({ name: z.enum(PROFILE_NAMES), description: z.string() })),
  staticModes: z.array(z.string()),
  runs: z.array(adaptationRunSchema),
  /** False while the benchmark is still running (it rewrites the report after every handoff). */
  finished: z.boolean().optional(),
  details: z.array(z.record(z.string(), z.unknown())).default([]),
});
export type AdaptationReport = z.infer<typeof adaptationReportSchema>;

/** HEAD of the checkout the benchmark runs from, with `+dirty-<hash of the diff>` when its tracked files differ. */
export async function currentCommit(): Promise<string> {
  const git = (...args: string[]) => promisify(execFile)('git', args, { cwd: REPO_ROOT, maxBuffer: 256 * 1024 * 1024 }).then((r) => r.stdout.trim());
  try {
    const [head, diff] = await Promise.all([git('rev-parse', 'HEAD'), git('diff', 'HEAD')]);
    // Uncommitted changes are named by their own hash: two runs of different edits differ.
    return diff ? `${head}+dirty-${createHash('sha256').update(diff).digest('hex').slice(0, 12)}` : head;
  } catch {
    return 'unknown';
  }
}

/**
 * Writes docs/bench/<name>.json (the testbed, the summary the issue names, the per-policy cells
 * and every run) and <name>.svg.
 */
export async function writeAdaptationReport(
  name: string,
  report: Omit<AdaptationReport, 'runs'> & { runs: AdaptationRun[]; runsPerPolicy: number; [extra: string]: unknown },
): Promise<void> {
  const described = new Map(report.profiles.map((p) => [p.name as string, p.description]));
  const full = { ...report, summary: summarize(report.runs), cells: policyCells(report.runs) };
  await mkdir(BENCH_DIR, { recursive: true });
  await writeFile(join(BENCH_DIR, `${name}.json`), JSON.stringify(full, null, 2) + '\n');
  const { runsPerPolicy: n, rttMs, guest } = report;
  const subtitle = `kvstore in a ${guest.memoryMiB / 1024} GiB guest handed off A → B over the tc-shaped WAN, ${rttMs} ms RTT; ${n} run${n > 1 ? 's' : ''} per policy and profile`;
  await writeFile(join(BENCH_DIR, `${name}.svg`), adaptationChart('Adaptive vs static modes under changing conditions', subtitle, full.cells, (p) => described.get(p) ?? p));
}
