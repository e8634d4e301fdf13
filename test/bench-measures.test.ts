import { test } from 'node:test';
import assert from 'node:assert/strict';
import { degradation, rateCurve, workRate, type WorkSample } from '../bench/handoff/work-rate.js';
import { markdownTable, memoryLabel, parseGuestMemory, type BenchRow } from '../bench/handoff/report.js';
import { resumeRefusal, segmentsSoFar } from '../bench/handoff/resume.js';
import { parseHeartbeatLine } from '../engine/vm/heartbeat-line.js';

/** Beats every 50 ms from `fromMs` to `toMs`, doing `perSecond` units of work a second from `work0`. */
function beats(fromMs: number, toMs: number, perSecond: number, work0 = 0): WorkSample[] {
  const out: WorkSample[] = [];
  for (let t = fromMs; t <= toMs; t += 50) out.push({ atMs: t, work: work0 + Math.round(((t - fromMs) * perSecond) / 1000) });
  return out;
}

test('a heartbeat line carries its beat and the work counter; an older guest\'s line is a beat without work', () => {
  assert.deepEqual(parseHeartbeatLine('HB 12 34567'), { counter: 12, work: 34567 });
  assert.deepEqual(parseHeartbeatLine('HB 12'), { counter: 12, work: null });
  assert.deepEqual(parseHeartbeatLine('HB 12 \r'), { counter: 12, work: null });
  assert.equal(parseHeartbeatLine('HB twelve'), null);
  assert.equal(parseHeartbeatLine('[  3.1] HB 12 4'), null);
});

test('the work rate is read between the first and the last beat of the window, and not from too few', () => {
  const s = beats(0, 10_000, 200);
  assert.equal(workRate(s, 0, 10_000), 200);
  assert.equal(workRate(s, 9_000, 10_000), 200);
  assert.equal(workRate([{ atMs: 0, work: 0 }], 0, 1_000), null);
  // Two beats a tenth of the window apart say nothing about the window.
  assert.equal(workRate([{ atMs: 0, work: 0 }, { atMs: 100, work: 5 }], 0, 1_000), null);
});

test('a guest at full pace from its first beat after the resume is degraded only until that beat', () => {
  const before = beats(0, 20_000, 1_000);
  const after = beats(21_300, 30_000, 1_000, 21_000);
  const d = degradation({ before, after, handoffStartedAtMs: 20_000, resumedAtMs: 21_000 });
  assert.deepEqual(d, { kind: 'recovered', seconds: 0.3, rateBefore: 1_000 });
});

test('the rate curve after a resume: second by second, null where a window has too few beats', () => {
  // Stalled for 1.5 s, then at half pace for a second, then at full pace.
  const after = [...beats(11_500, 12_500, 500, 0), ...beats(12_550, 15_000, 1_000, 500)];
  assert.deepEqual(rateCurve(after, 10_000, 5), [null, 500, 700, 1_000, 1_000]);
});

test('a guest slowed after the resume is degraded until a whole window runs at 90% of its rate before', () => {
  const before = beats(0, 20_000, 1_000);
  // 4 s at a quarter of the pace (its pages arriving), then 95% of it.
  const slow = beats(21_000, 25_000, 250, 20_000);
  const back = beats(25_050, 35_000, 950, slow.at(-1)!.work);
  const d = degradation({ before, after: [...slow, ...back], handoffStartedAtMs: 20_000, resumedAtMs: 21_000 });
  assert.equal(d.kind, 'recovered');
  // The first window wholly at the new pace starts at 25 s (the one from 24.95 s is mostly slow).
  assert.ok(d.kind === 'recovered' && d.seconds >= 3.9 && d.seconds <= 4.1, JSON.stringify(d));
});

test('a guest that never gets back to 90% is reported as not recovered, with what was watched as a lower bound', () => {
  const before = beats(0, 20_000, 1_000);
  const after = beats(21_000, 31_000, 800, 20_000);
  assert.deepEqual(degradation({ before, after, handoffStartedAtMs: 20_000, resumedAtMs: 21_000 }), { kind: 'not-recovered', seconds: 10, rateBefore: 1_000 });
});

test('without beats before the handoff, or without work in them, nothing is measured', () => {
  assert.equal(degradation({ before: [], after: beats(0, 5_000, 10), handoffStartedAtMs: 20_000, resumedAtMs: 21_000 }).kind, 'unmeasured');
  assert.equal(degradation({ before: beats(0, 20_000, 0, 7), after: beats(21_000, 25_000, 10), handoffStartedAtMs: 20_000, resumedAtMs: 21_000 }).kind, 'unmeasured');
});

test('a benchmark report is gone on with only unfinished, by the same commit, with no local change then or now', () => {
  const clean = { commit: 'a'.repeat(40), dirty: false };
  const report = (over: Partial<{ finished: boolean; code: { commit: string; dirty: boolean } }> = {}) => ({ finished: false, code: clean, ...over });
  assert.equal(resumeRefusal(report(), clean), null);
  assert.match(resumeRefusal(report({ finished: true }), clean)!, /finished/);
  assert.match(resumeRefusal(report({ code: { ...clean, dirty: true } }), clean)!, /local changes to aaaaaaaaaaaa/);
  assert.match(resumeRefusal(report(), { ...clean, dirty: true })!, /this clone has local changes/);
  assert.match(resumeRefusal(report(), { commit: 'b'.repeat(40), dirty: false })!, /measured at aaaaaaaaaaaa, this clone is at bbbbbbbbbbbb/);
});

test('a resumed run adds its own segment to the measuring time of those before it', () => {
  const t0 = Date.parse('2026-12-05T05:00:00Z');
  const { segments, wallSeconds } = segmentsSoFar([{ startedAt: '2026-12-04T05:00:00.000Z', seconds: 600 }], { startedAtMs: t0 }, t0 + 90_000);
  assert.deepEqual(segments.at(-1), { startedAt: '2026-12-05T05:00:00.000Z', seconds: 90 });
  assert.equal(wallSeconds, 690);
});

test('a guest size is given in K, M or G of whole pages, and read back as people say it', () => {
  assert.equal(parseGuestMemory('1048568K'), 1048568 / 1024);
  assert.equal(parseGuestMemory('4G'), 4096);
  assert.throws(() => parseGuestMemory('1048570K'), /whole number of 8 KiB/);
  assert.throws(() => parseGuestMemory('4194300K'), /whole number of 8 KiB/);
  assert.throws(() => parseGuestMemory('1 GiB'), /not a size like/);
  assert.equal(memoryLabel(parseGuestMemory('1048568K')), '1 GiB − 8 KiB');
  assert.equal(memoryLabel(parseGuestMemory('4194296K')), '4 GiB − 8 KiB');
  assert.equal(memoryLabel(1024), '1 GiB');
  assert.equal(memoryLabel(512), '512 MiB');
});

test('a guest whose beats stop after the resume is degraded for as long as it was watched', () => {
  const before = beats(0, 20_000, 1_000);
  const after = beats(21_000, 21_200, 1_000, 20_000);
  assert.deepEqual(degradation({ before, after, handoffStartedAtMs: 20_000, resumedAtMs: 21_000, watchedUntilMs: 51_000 }), { kind: 'not-recovered', seconds: 30, rateBefore: 1_000 });
});

test("a failed handoff is a row of the table that says so, and no other row's ratio is taken against it", () => {
  const cell = { workload: 'fluid', mbps: 5 };
  const rows: BenchRow[] = [
    { ...cell, system: 'handoff', totalSeconds: 0, downtimeSeconds: null, guestGapSeconds: null, wireBytes: 0, cpuSeconds: null, completed: false, guestContinued: null, failed: "handoff failed at step 'stream'" },
    { ...cell, system: 'qemu-tuned', totalSeconds: 75, downtimeSeconds: 2, guestGapSeconds: 2.1, wireBytes: 46e6, cpuSeconds: 118, completed: true, guestContinued: true },
  ];
  const [failed, tuned] = markdownTable(rows).split('\n').slice(2);
  assert.match(failed!, /^\| fluid \| 5 \| handoff \| \*\*failed\*\* \|/);
  assert.match(tuned!, /^\| fluid \| 5 \| qemu-tuned \| 75\.0 \| — \|/);
});
