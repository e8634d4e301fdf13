import { parseArgs } from 'node:util';
import { cellTable, targetsReport } from './handoff/cell-summary.js';
import { markdownTable, readStoredReport } from './handoff/report.js';

/**
 * npm run bench:handoff:table -- docs/bench/handoff-bench-NAME.json [--full]
 *
 * A bench:handoff report as text to read or paste: one line per cell, then the targets for the
 * hybrid and for pre-copy alone, and with --full every row. Reads the report only; measures nothing.
 */
const { values, positionals } = parseArgs({ options: { full: { type: 'boolean', default: false } }, allowPositionals: true });

async function main(): Promise<void> {
  if (positionals.length !== 1) throw new Error('give one report file (docs/bench/handoff-bench-*.json)');
  const file = positionals[0]!;
  const report = await readStoredReport(file);
  // A report from before wallSeconds was kept reads 0: not said.
  const measured = report.wallSeconds === 0 ? '' : `, ${(report.wallSeconds / 60).toFixed(1)} min of measuring in ${report.segments?.length ?? 1} segment(s)`;
  console.log(`${file}: ${report.rows.length} rows${report.code ? ` at ${report.code.commit.slice(0, 7)}${report.code.dirty ? ' (with local changes)' : ''}` : ''}${measured}\n`);
  console.log(cellTable(report.rows));
  console.log(`\n${targetsReport(report.rows)}`);
  if (values.full) console.log(`\n${markdownTable(report.rows)}`);
}

main().catch((err) => {
  console.error(`bench:handoff:table failed: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
