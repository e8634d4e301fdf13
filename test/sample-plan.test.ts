import { test } from 'node:test';
import assert from 'node:assert/strict';
import { effectiveMBps } from '../engine/adaptation/choose-mode.js';
import type { ModeMeasurement, StreamMeasurements } from '../engine/adaptation/measurements.js';
import { ALL_MODES, modeId } from '../engine/adaptation/mode.js';
import { SAMPLE_CPU_SHARE, boundsFromAbove, modesToSample, sampleBudgetAllows } from '../engine/adaptation/sample-plan.js';

const ALL = ALL_MODES.map(modeId);
const m = (mode: string, P_MBps: number, ratio = 0.3): ModeMeasurement => ({ mode, P_MBps, ratio, from: 'sample', bytes: 262_144 });

test('a lighter mode of the same family bounds a heavier one from above', () => {
  assert.ok(boundsFromAbove('none/xz-1', 'none/xz-9'));
  assert.ok(boundsFromAbove('none/xz-6', 'none/xz-6'));
  assert.ok(!boundsFromAbove('none/xz-9', 'none/xz-1'));
  assert.ok(boundsFromAbove('fossil/none', 'fossil/zstd-19'), 'the delta alone is work every codec adds to');
  assert.ok(!boundsFromAbove('fossil/none', 'none/zstd-19'), 'another delta');
  assert.ok(!boundsFromAbove('none/gzip-1', 'none/zstd-1'), 'another codec');
});

test('before anything is known every other mode is sampled in turn', () => {
  const first = modesToSample({ candidates: ALL, current: 'none/zstd-3', measured: [], currentEffMBps: null, count: 4, cursor: 0 });
  assert.equal(first.modes.length, 4);
  assert.ok(!first.modes.includes('none/zstd-3'));
  assert.deepEqual(first.dominated, []);
  const next = modesToSample({ candidates: ALL, current: 'none/zstd-3', measured: [], currentEffMBps: null, count: 4, cursor: first.cursor });
  assert.equal(new Set([...first.modes, ...next.modes]).size, 8, 'the round-robin goes on where it stopped');
});

test('a mode measured far slower than the current one moves input is left out, with its heavier siblings', () => {
  // The stream moves 6 MB/s of input; xz-1 processes 2 MB/s: even with its doubt (×1.5) it cannot
  // beat 6, and neither can xz-6 or xz-9. fossil/none at 3 MB/s rules out every fossil mode.
  const measured = [m('none/zstd-3', 40, 0.19), m('none/xz-1', 2), m('fossil/none', 3), m('none/zstd-9', 5)];
  const pick = modesToSample({ candidates: ALL, current: 'none/zstd-3', measured, currentEffMBps: 6, count: 40, cursor: 0 });
  for (const gone of ['none/xz-1', 'none/xz-6', 'none/xz-9', 'fossil/none', 'fossil/zstd-1', 'fossil/xz-9']) assert.ok(pick.dominated.includes(gone), gone);
  // 5 × 1.5 = 7.5 > 6: a noisy sample of zstd-9 does not rule it (or zstd-19) out yet.
  for (const kept of ['none/zstd-9', 'none/zstd-19', 'xor/xz-1', 'none/gzip-9']) assert.ok(pick.modes.includes(kept), kept);
  assert.equal(pick.modes.length + pick.dominated.length, ALL.length - 1);
});

test('samples stay within their share of one core', () => {
  assert.ok(sampleBudgetAllows(0, 0));
  assert.ok(sampleBudgetAllows(SAMPLE_CPU_SHARE * 10_000, 10_000));
  assert.ok(!sampleBudgetAllows(SAMPLE_CPU_SHARE * 10_000 + 1, 10_000));
});

test('the effective rate of a mode is min(P, R/r), capped by the operator', () => {
  const s: StreamMeasurements = { atMs: 0, mode: 'none/zstd-3', R_Mbps: 8, threads: 2, inputBytes: 0, wireBytes: 0, modes: [m('none/zstd-3', 40, 0.2), m('none/xz-1', 2, 0.1)] };
  assert.equal(effectiveMBps(s, 'none/zstd-3', { bandwidthCapMbps: null }), 5); // 1 MB/s / 0.2
  assert.equal(effectiveMBps(s, 'none/xz-1', { bandwidthCapMbps: null }), 2); // CPU-bound
  assert.equal(effectiveMBps(s, 'none/zstd-3', { bandwidthCapMbps: 4 }), 2.5);
  assert.equal(effectiveMBps(s, 'none/gzip-6', { bandwidthCapMbps: null }), null);
  assert.equal(effectiveMBps({ ...s, R_Mbps: null }, 'none/zstd-3', { bandwidthCapMbps: null }), null);
});

test('a mode that would win at its estimate is sampled again first; the rest of the round goes round-robin', () => {
  const measured = [
    { mode: 'none/zstd-16', P_MBps: 7.8, ratio: 0.142, from: 'sample' as const, bytes: 1 << 20 },
    { mode: 'none/zstd-15', P_MBps: 5.8, ratio: 0.147, from: 'sample' as const, bytes: 1 << 20 },
    { mode: 'none/gzip-1', P_MBps: 90, ratio: 0.2, from: 'sample' as const, bytes: 1 << 20 },
  ];
  // At 5 Mbit/s zstd-3 (r 0.183) moves 3.4 MB/s; zstd-16 would move 4.4, zstd-15 4.25, gzip-1 3.1.
  const estimatedEffMBps = new Map<string, number | null>([['none/zstd-16', 4.4], ['none/zstd-15', 4.25], ['none/gzip-1', 3.1]]);
  const pick = modesToSample({ candidates: ALL, current: 'none/zstd-3', measured, currentEffMBps: 3.4, count: 4, cursor: 0, estimatedEffMBps });
  assert.deepEqual(pick.modes.slice(0, 2), ['none/zstd-16', 'none/zstd-15'], 'contenders, best first, half the round');
  assert.equal(pick.modes.length, 4);
  assert.deepEqual(pick.modes.slice(2), ['none/none', 'none/gzip-1'], 'the rest from the round-robin, contenders left out of it');
  // Nothing beats the current mode at its estimate: all round-robin, as before.
  const plain = modesToSample({ candidates: ALL, current: 'none/zstd-3', measured, currentEffMBps: 5, count: 2, cursor: 0, estimatedEffMBps });
  assert.deepEqual(plain.modes, ALL.filter((m) => m !== 'none/zstd-3').slice(0, 2));
});

test('contenders take turns: the one sampled longest ago first, not always the best estimate', () => {
  // At 10 Mbit/s zstd-3 (r 0.183) moves 6.5 MB/s; zstd-15 would move 7.5 (CPU-bound), zstd-9
  // 6.9, gzip-9 6.9. By estimate alone zstd-15 took every contender's slot of a constant-10
  // Mbit/s run, and its 300 ms samples the whole budget: zstd-9 was sampled once.
  const measured = [m('none/zstd-15', 7.5, 0.147), m('none/zstd-9', 43, 0.1716), m('none/gzip-9', 26, 0.1711)];
  const estimatedEffMBps = new Map<string, number | null>([['none/zstd-15', 7.5], ['none/zstd-9', 6.88], ['none/gzip-9', 6.9]]);
  const pick = (lastSampledRound: Map<string, number>) =>
    modesToSample({ candidates: ALL, current: 'none/zstd-3', measured, currentEffMBps: 6.46, count: 2, cursor: 0, estimatedEffMBps, lastSampledRound }).modes[0];
  assert.equal(pick(new Map()), 'none/zstd-15', 'none sampled yet: the best estimate first');
  assert.equal(pick(new Map([['none/zstd-15', 3], ['none/gzip-9', 2], ['none/zstd-9', 1]])), 'none/zstd-9');
  assert.equal(pick(new Map([['none/zstd-15', 3], ['none/gzip-9', 2], ['none/zstd-9', 4]])), 'none/gzip-9');
  // Without the record (older callers): best estimate first, as before.
  assert.equal(modesToSample({ candidates: ALL, current: 'none/zstd-3', measured, currentEffMBps: 6.46, count: 2, cursor: 0, estimatedEffMBps }).modes[0], 'none/zstd-15');
});
