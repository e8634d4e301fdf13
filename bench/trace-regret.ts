import { readFile, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { chooseMode } from '../engine/adaptation/choose-mode.js';
import { parseStreamTrace, type StreamTrace } from '../engine/adaptation/stream-trace.js';
import { regretOf, type ModePolicy } from '../engine/adaptation/trace-replay.js';

/**
 * npm run trace:regret -- <trace.json | folder> ... [--json]
 * Runs the adaptive policy (the workflow's chooseMode, with its dwell) over recorded stream traces
 * (a worker writes them with --trace-dir or EHOFF_TRACE_DIR) and reports, per trace, its time
 * against every mode measured in the trace used alone: the regret is policy / best static in
 * hindsight. No VM, no link: the same conditions for every policy.
 */
export const ADAPTIVE: ModePolicy = (m, current, heldMs) => chooseMode(m, { pinnedMode: null, bandwidthCapMbps: null }, current, heldMs).mode;

export async function loadTraces(paths: string[]): Promise<Array<{ file: string; trace: StreamTrace }>> {
  const files: string[] = [];
  for (const p of paths) {
    if ((await stat(p)).isDirectory()) files.push(...(await readdir(p)).filter((f) => f.endsWith('.json')).sort().map((f) => join(p, f)));
    else files.push(p);
  }
  return Promise.all(files.map(async (file) => ({ file, trace: parseStreamTrace(await readFile(file, 'utf8'), file) })));
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({ options: { json: { type: 'boolean', default: false } }, allowPositionals: true });
  if (positionals.length === 0) {
    console.error('usage: npm run trace:regret -- <trace.json | folder> ... [--json]');
    process.exit(2);
  }
  const traces = await loadTraces(positionals).catch((err: Error) => {
    console.error(`trace:regret: ${err.message}`);
    process.exit(2);
  });
  const rows = traces.map(({ file, trace }) => ({ file, ...regretOf(trace, ADAPTIVE) }));
  console.log('| trace | input MB | adaptive s | switches | best static | s | worst static s | regret |');
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const r of rows) {
    const best = r.statics[0]!;
    const worst = r.statics.at(-1)!;
    console.log(`| ${r.file} | ${r.inputMB.toFixed(1)} | ${r.policy.seconds.toFixed(1)} | ${r.policy.switches.length} | ${best.mode} | ${best.seconds.toFixed(1)} | ${worst.seconds.toFixed(1)} | ${r.regret.toFixed(3)} |`);
  }
  if (values.json) console.log(JSON.stringify({ traces: rows.map((r) => ({ file: r.file, inputMB: r.inputMB, adaptiveSeconds: r.policy.seconds, switches: r.policy.switches, statics: r.statics, regret: r.regret })) }));
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
