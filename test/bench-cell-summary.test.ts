import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cellTable, targetResults, targetsTable } from '../bench/handoff/cell-summary.js';
import type { BenchRow, System } from '../bench/handoff/report.js';

// The targets the README reports, computed from a report's rows: what holds, what misses, and
// what a capped QEMU row cannot say.

function row(workload: string, mbps: number, system: System, totalSeconds: number, more: Partial<BenchRow> = {}): BenchRow {
  return { workload, mbps, system, totalSeconds, downtimeSeconds: null, guestGapSeconds: null, wireBytes: 1e6, cpuSeconds: 1, completed: true, guestContinued: null, ...more };
}

const rows: BenchRow[] = [
  row('kvstore', 10, 'handoff', 40, { downtimeSeconds: 0.4, guestGapSeconds: 0.5, degraded: { seconds: 0.1, recovered: true } }),
  row('kvstore', 10, 'handoff-precopy', 38, { downtimeSeconds: 0.45, guestGapSeconds: 0.6 }),
  row('kvstore', 10, 'qemu-tuned', 80),
  row('kvstore', 10, 'qemu-classic', 400, { completed: false }),
  row('kvstore', 10, 'floor', 20),
  row('fluid', 10, 'handoff', 20, { downtimeSeconds: 0.5, guestGapSeconds: 1.7, postCopy: { stalePages: 16000, remoteFaults: 200, faultLatencyMedianMs: 30 } }),
  row('fluid', 10, 'handoff-precopy', 40, { downtimeSeconds: 3.9, guestGapSeconds: 4.0 }),
  row('fluid', 10, 'qemu-tuned', 60, { completed: false }),
  row('fluid', 10, 'qemu-classic', 199.5, { completed: false }),
  row('fluid', 10, 'floor', 2),
  row('idle', 10, 'handoff', 5, { failed: 'stream: the link went down. The VM runs on at A.' }),
  row('idle', 10, 'qemu-classic', 120),
];

test('the targets for the hybrid: counts, ranges, misses by cell, a failed handoff missing all of its cell', () => {
  const [host, guest, floor, tuned, classic] = targetResults(rows);
  assert.deepEqual(host, { target: 'Host downtime ≤ 1 s', holds: 2, cells: 3, detail: '0.40–0.50 s; missed at idle@10 (failed)' });
  assert.deepEqual(guest, { target: 'Guest gap ≤ 1 s', holds: 1, cells: 3, detail: '0.50–1.70 s; missed at fluid@10 (1.70 s), idle@10 (failed)' });
  assert.deepEqual(floor, { target: 'Total ≤ 1.5× the floor', holds: 0, cells: 2, detail: 'kvstore 2.00×, fluid 10.00×' });
  assert.deepEqual(tuned, { target: 'Faster than QEMU tuned', holds: 2, cells: 2, detail: '2.00× in the one cell it finished; hit its cap in 1' });
  // fluid's classic stopped at 9.975×: at its cap, within the timers' 1%.
  assert.deepEqual(classic, { target: '≥ 10× QEMU classic', holds: 2, cells: 3, detail: 'it finished in no cell; hit its cap in 2; missed at idle@10 (failed)' });
});

test('for pre-copy alone, a classic row capped at the hybrid\'s 10× is too short to judge it by', () => {
  const classic = targetResults(rows, 'handoff-precopy')[4]!;
  assert.equal(classic.cells, 1);
  assert.equal(classic.holds, 1);
  assert.match(classic.detail, /not known where its cap was lower: fluid@10 \(≥ 4\.99×\)$/);
  const host = targetResults(rows, 'handoff-precopy')[0]!;
  assert.deepEqual([host.holds, host.cells], [1, 2]);
});

test('one line per cell, with caps, failures and the post-copy pages', () => {
  const lines = cellTable(rows).split('\n');
  assert.equal(lines.length, 2 + 3);
  assert.equal(lines[2], '| kvstore | 10 | 40.0 | 38.0 | 80.0 | ≥ 400.0 | 20.0 | 0.40 / 0.50 / 0.10 | 0.45 / 0.60 / — | — |');
  assert.equal(lines[3], '| fluid | 10 | 20.0 | 40.0 | ≥ 60.0 | ≥ 199.5 | 2.0 | 0.50 / 1.70 / — | 3.90 / 4.00 / — | 16000 (200, 30) |');
  assert.equal(lines[4], '| idle | 10 | failed | — | — | 120.0 | — | failed | — | — |');
  assert.match(targetsTable(targetResults(rows)), /^\| Host downtime ≤ 1 s \| 2 of 3 cells \| 0\.40–0\.50 s; missed at idle@10 \(failed\) \|$/m);
});
