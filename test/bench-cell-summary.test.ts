import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cellTable, targetResults, targetsReport } from '../bench/handoff/cell-summary.js';
import type { BenchRow, System } from '../bench/handoff/report.js';

// The targets the README reports, computed from a report's rows: what holds, what misses, and
// what a capped or invalid QEMU row cannot say.

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
  row('fluid', 10, 'handoff-precopy', 61, { downtimeSeconds: 3.9, guestGapSeconds: 4.0 }),
  // Capped at 3× the hybrid: more than pre-copy's time is not known.
  row('fluid', 10, 'qemu-tuned', 60, { completed: false }),
  row('fluid', 10, 'qemu-classic', 200.5, { completed: false }),
  row('fluid', 10, 'floor', 2),
  row('idle', 10, 'handoff', 5, { failed: 'stream: the link went down. The VM runs on at A.' }),
  row('idle', 10, 'handoff-precopy', 5, { downtimeSeconds: 0.3, guestGapSeconds: 0.4, completed: false, guestContinued: false }),
  row('idle', 10, 'qemu-tuned', 30, { completed: false, guestContinued: false }),
  row('idle', 10, 'qemu-classic', 120),
  row('idle', 10, 'floor', 0),
];

test('the targets for the hybrid: counts, ranges, misses by cell, a failed handoff missing all of its cell', () => {
  const [host, guest, floor, tuned, classic] = targetResults(rows);
  assert.deepEqual(host, { target: 'Host downtime ≤ 1 s', holds: 2, cells: 3, detail: '0.40–0.50 s; missed at idle@10 (failed)' });
  assert.deepEqual(guest, { target: 'Guest gap ≤ 1 s', holds: 1, cells: 3, detail: '0.50–1.70 s; missed at fluid@10 (1.70 s), idle@10 (failed)' });
  assert.deepEqual(floor, { target: 'Total ≤ 1.5× the floor', holds: 0, cells: 3, detail: 'kvstore 2.00×, fluid 10.00×; no ratio at idle@10 (failed)' });
  // idle's tuned migration lost its guest: no migration to compare with.
  assert.deepEqual(tuned, { target: 'Faster than QEMU tuned', holds: 2, cells: 2, detail: 'it finished in one cell (2.00×); hit its cap in one cell; its guest did not go on at idle@10 (not judged)' });
  assert.deepEqual(classic, { target: '≥ 10× QEMU classic', holds: 2, cells: 3, detail: 'it finished in one cell; hit its cap in 2 cells; missed at idle@10 (failed)' });
});

test("for pre-copy alone: a QEMU row capped at the hybrid's multiple is too short to judge it by; a guest that did not go on misses", () => {
  const results = targetResults(rows, 'handoff-precopy');
  const [host, floor, tuned, classic] = [results[0]!, results[2]!, results[3]!, results[4]!];
  assert.deepEqual([host.holds, host.cells], [1, 3]);
  assert.match(host.detail, /missed at fluid@10 \(3\.90 s\), idle@10 \(its guest did not go on\)$/);
  assert.match(floor.detail, /no ratio at idle@10 \(its guest did not go on\)$/);
  assert.deepEqual([tuned.holds, tuned.cells], [1, 1]);
  assert.match(tuned.detail, /not known where its cap was too low: fluid@10 \(≥ 0\.98×\); its guest did not go on at idle@10 \(not judged\)$/);
  assert.deepEqual([classic.holds, classic.cells], [1, 2]);
  assert.match(classic.detail, /missed at idle@10 \(its guest did not go on\); not known where its cap was too low: fluid@10 \(≥ 3\.29×\)$/);
});

test('a run of the handoff alone reports the downtime targets and leaves out those it has nothing to judge by', () => {
  const report = targetsReport([row('kvstore', 25, 'handoff', 20, { downtimeSeconds: 0.3, guestGapSeconds: 0.4 })]);
  assert.match(report, /Host downtime ≤ 1 s \| 1 of one cell/);
  assert.doesNotMatch(report, /floor|QEMU|0 of 0/);
});

test('a zero floor gives no ratio, and says so', () => {
  const floor = targetResults([row('idle', 25, 'handoff', 4, { downtimeSeconds: 0.2, guestGapSeconds: 0.3 }), row('idle', 25, 'floor', 0)])[2]!;
  assert.deepEqual(floor, { target: 'Total ≤ 1.5× the floor', holds: 0, cells: 1, detail: 'no ratio at idle@25 (the floor is 0 s)' });
});

test('one line per cell, with caps, failures, lost guests and the post-copy pages', () => {
  const lines = cellTable(rows).split('\n');
  assert.equal(lines.length, 2 + 3);
  assert.equal(lines[2], '| kvstore | 10 | 40.0 | 38.0 | 80.0 | ≥ 400.0 | 20.0 | 0.40 / 0.50 / 0.10 | 0.45 / 0.60 / — | — |');
  assert.equal(lines[3], '| fluid | 10 | 20.0 | 61.0 | ≥ 60.0 | ≥ 200.5 | 2.0 | 0.50 / 1.70 / — | 3.90 / 4.00 / — | 16000 (200, 30) |');
  assert.equal(lines[4], '| idle | 10 | failed | 5.0 (guest did not go on) | 30.0 (guest did not go on) | 120.0 | 0.0 | failed | 0.30 / 0.40 / — | — |');
  const report = targetsReport(rows);
  assert.match(report, /^Targets for handoff:\n\n\| target \| holds in \| figures \|$/m);
  assert.match(report, /^\| Host downtime ≤ 1 s \| 2 of 3 cells \| 0\.40–0\.50 s; missed at idle@10 \(failed\) \|$/m);
  assert.match(report, /^Targets for handoff-precopy:$/m);
});
