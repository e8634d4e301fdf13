import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { cellTable, targetsReport } from './handoff/cell-summary.js';
import { benchRowSchema, markdownTable } from './handoff/report.js';

/**
 * npm run bench:handoff:table -- docs/bench/handoff-bench-NAME.json [--full]
 *
 * A bench:handoff report as text to read or paste: one line per cell, then the targets for the
 * hybrid and for pre-copy alone, and with --full every row. Reads the report only; measures nothing.
 */
const { values, positionals } = parseArgs({ options: { full: { type: 'boolean', default: false } }, allowPositionals: true });

const reportSchema = z.object({
  rows: z.array(benchRowSchema),
  wallSeconds: z.number().optional(),
  segments: z.array(z.object({ startedAt: z.string(), seconds: z.number() })).optional(),
  code: z.object({ commit: z.string(), dirty: z.boolean() }).optional(),
});

async function main(): Promise<void> {
  if (positionals.length !== 1) throw new Error('give one report file (docs/bench/handoff-bench-*.json)');
  const file = positionals[0]!;
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(file, 'utf8'));
  } catch (err) {
    throw new Error(`${file}: ${(err as Error).message}`);
  }
  const parsed = reportSchema.safeParse(raw);
  if (!parsed.success) throw new Error(`${file} is not a bench:handoff report: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  const report = parsed.data;
  const measured = report.wallSeconds === undefined ? '' : `, ${(report.wallSeconds / 60).toFixed(1)} min of measuring in ${report.segments?.length ?? 1} segment(s)`;
  console.log(`${file}: ${report.rows.length} rows${report.code ? ` at ${report.code.commit.slice(0, 7)}${report.code.dirty ? ' (with local changes)' : ''}` : ''}${measured}\n`);
  console.log(cellTable(report.rows));
  console.log(`\n${targetsReport(report.rows)}`);
  if (values.full) console.log(`\n${markdownTable(report.rows)}`);
}

main().catch((err) => {
  console.error(`bench:handoff:table failed: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
