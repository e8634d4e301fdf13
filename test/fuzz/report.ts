import { batchFramePayload } from './batch-mutations.js';
import type { CaseKind, FuzzInput } from './fuzz-inputs.js';
import { DEFAULT_SETTINGS } from './settings.js';
import type { FailureKind } from './verdict.js';

export interface CaseFailure {
  index: number;
  kind: CaseKind;
  failure: FailureKind;
  detail: string;
  /** What the input was: its mutations and the start of its bytes. */
  input: string;
}

export interface FuzzSummary {
  seed: number;
  /** Cases run: fewer than planned if the run stopped at its failure limit. */
  cases: number;
  planned: number;
  byKind: Record<CaseKind, number>;
  failures: CaseFailure[];
  livenessChecks: number;
  peakRssBytes: number;
  rssBoundBytes: number;
  ms: number;
}

/** The first bytes of an input, in hex, 32 to a line: enough to see which frame and field it broke. */
export function hexPrefix(bytes: Buffer, max = 256): string {
  const lines: string[] = [];
  for (let off = 0; off < Math.min(bytes.length, max); off += 32) lines.push(`    ${off.toString(16).padStart(6, '0')}  ${bytes.subarray(off, Math.min(off + 32, max)).toString('hex')}`);
  return lines.join('\n');
}

export function describeInput(input: FuzzInput): string {
  if (input.kind === 'batch') {
    const wire = batchFramePayload(input.batch);
    return [
      `  mutations: ${input.batch.mutations.join('; ') || 'none (a valid batch)'}`,
      `  header: ${input.batch.headerText.slice(0, 600)}`,
      `  batch frame payload, ${wire.length} bytes:`,
      hexPrefix(wire),
    ].join('\n');
  }
  const reads = input.chunking.length <= 12 ? input.chunking.join(',') : `${input.chunking.slice(0, 12).join(',')},… (${input.chunking.length} reads)`;
  return [
    `  mutations: ${input.mutations.join('; ')}${input.intact ? ' (intact: must be taken)' : ''}`,
    `  ${input.bytes.length} bytes in reads of ${reads}${input.kind === 'socket' ? (input.pauseAfterRead !== undefined ? `, a pause after read ${input.pauseAfterRead}` : '') : `, first frame limit ${input.helloLimit ? 'hello-sized' : 'full'}`}:`,
    hexPrefix(input.bytes),
  ].join('\n');
}

/** The command that runs case `index` alone; the kind of a case follows from --socket-every too. */
export function replayCommand(seed: number, socketEvery: number, index: number): string {
  return `npm run fuzz -- --seed ${seed}${socketEvery === DEFAULT_SETTINGS.socketEvery ? '' : ` --socket-every ${socketEvery}`} --only ${index}`;
}

export function formatFailure(f: CaseFailure, replay: string): string {
  return [`FAILED case ${f.index} (${f.kind}, ${f.failure}): ${f.detail}`, `  replay: ${replay}`, f.input].join('\n');
}

const MiB = (bytes: number) => `${Math.round(bytes / 2 ** 20)} MiB`;

/** The run's last line: how many cases passed, of which kinds, the peak memory and the time. */
export function summaryLine(s: FuzzSummary): string {
  const kinds = `random ${s.byKind.random}, mutated ${s.byKind.mutated}, batches ${s.byKind.batch}, socket ${s.byKind.socket}`;
  const over = s.peakRssBytes > s.rssBoundBytes ? ` (over the ${MiB(s.rssBoundBytes)} bound)` : '';
  const tail = `peak RSS ${MiB(s.peakRssBytes)}${over}, ${Math.round(s.ms / 1000)} s`;
  const failedCases = new Set(s.failures.map((f) => f.index)).size;
  if (failedCases === 0 && !over) return `fuzz: ${s.cases} cases passed (${kinds}), ${s.livenessChecks} liveness checks, ${tail}`;
  const byFailure = [...new Set(s.failures.map((f) => f.failure))].map((k) => `${k} ${s.failures.filter((f) => f.failure === k).length}`).join(', ');
  const stopped = s.cases < s.planned ? `; stopped, ${s.planned} planned` : '';
  return `fuzz: ${failedCases} of ${s.cases} cases FAILED (${byFailure || 'memory bound'}; ${kinds}${stopped}), ${tail}`;
}

export function passed(s: FuzzSummary): boolean {
  return s.failures.length === 0 && s.peakRssBytes <= s.rssBoundBytes;
}
