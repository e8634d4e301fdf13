import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import { promisify } from 'node:util';
import { z } from 'zod';
import { REPO_ROOT } from '../../infra/paths.js';
import { BENCH_DIR, benchOptionsSchema, benchRowSchema, type BenchReport } from './report.js';

const run = promisify(execFile);

/**
 * The code a run measures with: its commit and whether anything tracked or new differs from it.
 * The benchmark's own reports (docs/bench) are left out: a run rewrites its report as it goes.
 */
export async function codeIdentity(): Promise<{ commit: string; dirty: boolean }> {
  const git = (...args: string[]) => run('git', args, { cwd: REPO_ROOT }).then((r) => r.stdout.trim());
  const commit = await git('rev-parse', 'HEAD').catch((err: Error) => {
    throw new Error(`the benchmark records the commit it measures, and git could not tell it (${err.message.split('\n')[0]}): run it from a clone`);
  });
  const changes = await git('status', '--porcelain', '--', '.', ':(exclude)docs/bench');
  return { commit, dirty: changes.length > 0 };
}

/** What a report holds that a resumed run goes on from. */
const resumableSchema = z.object({
  finished: z.boolean(),
  code: z.object({ commit: z.string(), dirty: z.boolean() }),
  options: benchOptionsSchema,
  segments: z.array(z.object({ startedAt: z.string(), seconds: z.number() })),
  rows: z.array(benchRowSchema),
  details: z.array(z.record(z.string(), z.unknown())),
  floors: z.record(z.string(), z.unknown()).optional(),
});
export type Resumable = z.infer<typeof resumableSchema> & { name: string };

/**
 * Reads an interrupted run's report for `--resume`: it must be one of docs/bench's, unfinished,
 * written by this same commit with no local change then or now — the rows it goes on from were
 * measured by the code that measures the rest.
 */
export async function loadResumable(file: string, now: { commit: string; dirty: boolean }): Promise<Resumable> {
  const path = resolve(file);
  if (dirname(path) !== BENCH_DIR || !path.endsWith('.json')) throw new Error(`--resume: ${file} is not a report in ${BENCH_DIR}`);
  let report: z.infer<typeof resumableSchema>;
  try {
    report = resumableSchema.parse(JSON.parse(await readFile(path, 'utf8')));
  } catch (err) {
    const why = err instanceof z.ZodError ? err.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ') : (err as Error).message;
    throw new Error(`--resume: ${file} is not a report a run can go on from (${why})`);
  }
  const refusal = resumeRefusal(report, now);
  if (refusal) throw new Error(`--resume: ${file} ${refusal}`);
  return { ...report, name: basename(path, '.json') };
}

/** Why a report cannot be gone on with by the code `now` (null: it can). */
export function resumeRefusal(report: { finished: boolean; code: { commit: string; dirty: boolean } }, now: { commit: string; dirty: boolean }): string | null {
  const at = report.code.commit.slice(0, 12);
  if (report.finished) return 'is a finished run; nothing to go on with';
  if (report.code.dirty) return `was measured with local changes to ${at}: its rows cannot be matched to a commit`;
  if (now.dirty) return `must go on with ${at} exactly, and this clone has local changes`;
  if (report.code.commit !== now.commit) return `was measured at ${at}, this clone is at ${now.commit.slice(0, 12)}: check that commit out to go on`;
  return null;
}

/** A report's segments and their sum, with the one now running counted to `nowMs`. */
export function segmentsSoFar(prior: BenchReport['segments'], current: { startedAtMs: number }, nowMs: number): { segments: NonNullable<BenchReport['segments']>; wallSeconds: number } {
  const segments = [...(prior ?? []), { startedAt: new Date(current.startedAtMs).toISOString(), seconds: (nowMs - current.startedAtMs) / 1000 }];
  return { segments, wallSeconds: segments.reduce((s, x) => s + x.seconds, 0) };
}
