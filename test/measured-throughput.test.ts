import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chooseMode, type StreamPolicy } from '../engine/adaptation/choose-mode.js';
import type { StreamMeasurements } from '../engine/adaptation/measurements.js';
import { spreadDoubt, StreamProfiler } from '../engine/adaptation/stream-profiler.js';

const free: StreamPolicy = { pinnedMode: null, bandwidthCapMbps: null };
const batch = (modeId: string, busyMs: number) => ({
  seq: 0, modeId, payload: new Uint8Array(200_000), rawBytes: 0, rawXxh64: '', payloadXxh64: '', busyMs, classifyMs: 1, inputBytes: 1 << 20,
  stages: { chunks: 256, zero: 0, baseRefs: 0, selfRefs: 0, data: 256, againstPrevious: 0 },
});

/** 30 batches of zstd-3, one per `cycleMs`, of which the sender waited `waitMs` on the pipeline. */
function streamed(cycleMs: number, waitMs: number): { p: StreamProfiler; advance: (ms: number) => void } {
  let now = 0;
  const p = new StreamProfiler(2, () => now, 0);
  for (let i = 0; i < 30; i++) {
    now += cycleMs;
    p.recordBatch(batch('none/zstd-3', 50), 200_000);
    p.recordDelivery('none/zstd-3', 1 << 20, cycleMs, waitMs);
  }
  return { p, advance: (ms) => (now += ms) };
}

test('P is what the stream achieved while the pipeline set the pace, and the same shortfall scales the samples', () => {
  // Each 1 MiB batch takes 50 ms of a pool thread: by busy time 2 × 21 = 42 MB/s. But the guest and
  // QEMU take CPU too: the sender waits on the pipeline for 90 of every 100 ms, 10.5 MB/s in truth.
  const { p } = streamed(100, 90);
  p.recordSample('none/xz-1', 256 * 1024, 40_000, 100); // busy time: 2 × 2.6 = 5.2 MB/s
  const m = p.measurements('none/zstd-3');
  const zstd = m.modes.find((x) => x.mode === 'none/zstd-3')!;
  const xz = m.modes.find((x) => x.mode === 'none/xz-1')!;
  assert.equal(zstd.P_from, 'achieved');
  assert.ok(Math.abs(zstd.P_MBps - 10.49) < 0.05, `achieved: ${zstd.P_MBps}`);
  assert.equal(xz.P_from, 'pool');
  // Scaled by 10.49 / 41.9: the sample's 5.2 MB/s are ≈ 1.3 on the CPU free now.
  assert.ok(Math.abs(xz.P_MBps - 5.24 * (10.49 / 41.94)) < 0.05, `scaled: ${xz.P_MBps}`);
  // One sample: its low end is far below its estimate; the streamed mode's is close.
  assert.ok(xz.P_lowMBps! < 0.6 * xz.P_MBps, `a single sample is doubted: ${xz.P_lowMBps} of ${xz.P_MBps}`);
  assert.ok(zstd.P_lowMBps! >= 0.85 * zstd.P_MBps);
  assert.ok(xz.ratioHigh! > xz.ratio);
});

test('cycles where the link held the sender back are not a measurement of P', () => {
  const { p } = streamed(400, 20); // waited 5%: the link was the limit
  const zstd = p.measurements('none/zstd-3').modes[0]!;
  assert.equal(zstd.P_from, 'pool');
  assert.ok(Math.abs(zstd.P_MBps - 41.94) < 0.1, `busy time stands: ${zstd.P_MBps}`);
});

test('an achieved figure goes stale: after the window without pipeline-bound cycles it is dropped', () => {
  const { p, advance } = streamed(100, 90);
  assert.equal(p.measurements('none/zstd-3').modes[0]!.P_from, 'achieved');
  advance(10_000);
  assert.equal(p.measurements('none/zstd-3').modes[0]!.P_from, 'pool');
});

function withBounds(R_Mbps: number, modes: Array<{ mode: string; P: number; r: number; Plow: number; rHigh: number }>): StreamMeasurements {
  return {
    atMs: 1000, mode: 'none/zstd-3', R_Mbps, threads: 2, inputBytes: 1, wireBytes: 1,
    modes: modes.map((x) => ({ mode: x.mode, P_MBps: x.P, ratio: x.r, from: 'sample' as const, bytes: 1 << 18, P_lowMBps: x.Plow, ratioHigh: x.rHigh })),
  };
}

test('a mode known only from samples must win at the low end of its measurement', () => {
  // 10 Mbit/s: zstd-3 moves 1.25/0.2 = 6.25 MB/s. xz-1's estimate (P 9, r 0.12) would move
  // 1.25/0.12 = 10.4 — but its single sample allows P as low as 3: it may move only 3.
  const m = withBounds(10, [
    { mode: 'none/zstd-3', P: 40, r: 0.2, Plow: 36, rHigh: 0.21 },
    { mode: 'none/xz-1', P: 9, r: 0.12, Plow: 3, rHigh: 0.14 },
  ]);
  const d = chooseMode(m, free, 'none/zstd-3');
  assert.equal(d.mode, 'none/zstd-3');
  // The rule before it (estimates only) switches — the heavy-codec flips.
  assert.equal(chooseMode(m, free, 'none/zstd-3', Infinity, { confidence: false }).mode, 'none/xz-1');
  // Measured enough to be sure of P ≥ 8: now it wins at its pessimistic end, 1.25/0.14 = 8.9.
  const sure = withBounds(10, [
    { mode: 'none/zstd-3', P: 40, r: 0.2, Plow: 36, rHigh: 0.21 },
    { mode: 'none/xz-1', P: 9, r: 0.12, Plow: 8, rHigh: 0.14 },
  ]);
  const s = chooseMode(sure, free, 'none/zstd-3');
  assert.equal(s.mode, 'none/xz-1');
  assert.match(s.reason, /at the low end of its measurement/);
});

test('a sample beside the streamed mode is read relative to it: the chunks it caught do not set its ratio', () => {
  const { p } = streamed(100, 90); // none/zstd-3 streams at r 0.19, 10.5 MB/s achieved (a quarter of its pool rate)
  // The sample caught very compressible chunks: xz-1 made 4 KB of them, but zstd-3 on the same
  // chunks made 5 KB — xz-1 is 0.8 of zstd-3 there.
  for (let i = 0; i < 4; i++) p.recordSample('none/xz-1', 256 * 1024, 4_000, 80, { mode: 'none/zstd-3', outBytes: 5_000 });
  const xz = p.measurements('none/zstd-3').modes.find((x) => x.mode === 'none/xz-1')!;
  const zstdRatio = 200_000 / (1 << 20);
  assert.ok(Math.abs(xz.ratio - 0.8 * zstdRatio) < 0.001, `r is zstd-3's stream ratio × 0.8: ${xz.ratio}`);
  // P is its own pool time (2 × 256 KiB / 80 ms = 6.55 MB/s), with the stream's shortfall.
  assert.equal(xz.P_from, 'pool');
  assert.ok(Math.abs(xz.P_MBps - 6.55 * (10.49 / 41.94)) < 0.05, `P: ${xz.P_MBps}`);
  // Without the reference its own absolute figures would have stood: r 0.015, ten times too good.
  const { p: bare } = streamed(100, 90);
  bare.recordSample('none/xz-1', 256 * 1024, 4_000, 80);
  assert.ok(bare.measurements('none/zstd-3').modes.find((x) => x.mode === 'none/xz-1')!.ratio < 0.02);
});

test('a lighter codec is not credited with more than the main thread reads and classifies', () => {
  let now = 0;
  const p = new StreamProfiler(2, () => now, 0);
  // Reading and classifying scattered pages takes 80 ms per MiB: 13 MB/s whatever the codec.
  for (let i = 0; i < 30; i++) {
    now += 100;
    p.recordBatch({ ...batch('none/zstd-3', 50), classifyMs: 80 }, 200_000);
    p.recordDelivery('none/zstd-3', 1 << 20, 100, 90);
  }
  // xor/zstd-1's own pool time would give 2 × 256 KiB / 5 ms = 105 MB/s; the stream achieves 10.5
  // where reading allows 13.1, and so would xor/zstd-1.
  for (let i = 0; i < 4; i++) p.recordSample('xor/zstd-1', 256 * 1024, 5_000, 5, { mode: 'none/zstd-3', outBytes: 5_000 });
  const x = p.measurements('none/zstd-3').modes.find((m) => m.mode === 'xor/zstd-1')!;
  assert.ok(x.P_MBps <= 13.11, `never above the classification rate: ${x.P_MBps}`);
  assert.ok(Math.abs(x.P_MBps - 10.49) < 0.1, `the rate reading allows, less the stream's shortfall: ${x.P_MBps}`);
});

test('a heavier codec beside a reference held back by reading is judged by its own pool time, not scaled from that bound', () => {
  let now = 0;
  const p = new StreamProfiler(2, () => now, 0);
  // The pool would do zstd-3 at 2 × 1 MiB / 5 ms = 419 MB/s; reading and classifying allow 13.
  // The link holds the stream back (no pipeline-bound cycles), as at 5 Mbit/s.
  for (let i = 0; i < 30; i++) {
    now += 100;
    p.recordBatch({ ...batch('none/zstd-3', 5), classifyMs: 80 }, 200_000);
    p.recordDelivery('none/zstd-3', 1 << 20, 100, 5);
  }
  // zstd-16 takes 300 ms of a pool thread per whole-batch sample: 2 × 1 MiB / 0.3 s ≈ 7 MB/s.
  for (let i = 0; i < 4; i++) p.recordSample('none/zstd-16', 1 << 20, 150_000, 300, { mode: 'none/zstd-3', outBytes: 190_000 });
  const x = p.measurements('none/zstd-3').modes.find((m) => m.mode === 'none/zstd-16')!;
  assert.equal(x.P_from, 'pool');
  assert.ok(Math.abs(x.P_MBps - 6.99) < 0.05, `its own pool rate: ${x.P_MBps} (13.1 × 5/300 = 0.22 scaled from the bound)`);
  assert.ok(Math.abs(x.ratio - (200_000 / (1 << 20)) * (150_000 / 190_000)) < 0.001, `zstd-3's stream ratio × 150/190: ${x.ratio}`);
});

test('the doubt about a sampled mode is its samples\' own spread once there are enough of them', () => {
  // Fewer than three: the prior stands, whatever two figures say.
  assert.equal(spreadDoubt([5, 5], 0.2), 0.2);
  // Three samples agreeing to 1%: two standard errors of their mean, 1.15%.
  assert.ok(Math.abs(spreadDoubt([0.93, 0.94, 0.95], 0.1) - (2 * 0.01) / 0.94 / Math.sqrt(3)) < 1e-9);
  // Scattered samples are doubted more than the prior would have.
  assert.ok(spreadDoubt([2, 6, 10], 0.2) > 0.7); // 2 × 4 / 6 / √3
});

test('a mode whose whole-batch samples agree is trusted near its estimate; one whose samples scatter is not', () => {
  const { p } = streamed(400, 20); // link-bound zstd-3, r 0.19
  // zstd-9 beside it on five batches: 0.94 of zstd-3's output each time, to within a percent.
  for (const out of [187_000, 188_000, 189_000, 187_500, 188_500]) p.recordSample('none/zstd-9', 1 << 20, out, 40, { mode: 'none/zstd-3', outBytes: 200_000 });
  // gzip-9 on the same batches: 0.88 of it on average, but anywhere from 0.70 to 1.06.
  for (const out of [140_000, 212_000, 160_000, 200_000, 168_000]) p.recordSample('none/gzip-9', 1 << 20, out, 40, { mode: 'none/zstd-3', outBytes: 200_000 });
  const m = p.measurements('none/zstd-3');
  const z9 = m.modes.find((x) => x.mode === 'none/zstd-9')!;
  const g9 = m.modes.find((x) => x.mode === 'none/gzip-9')!;
  assert.ok(z9.ratioHigh! / z9.ratio < 1.02, `agreeing samples: r high ${z9.ratioHigh} of ${z9.ratio}`);
  assert.ok(g9.ratioHigh! / g9.ratio > 1.15, `scattered samples: r high ${g9.ratioHigh} of ${g9.ratio}`);
  // At 10 Mbit/s the stream moves to zstd-9 (its worst case still 4% fewer bytes) and not to
  // gzip-9, better on average but not beyond its scatter.
  const d = chooseMode({ ...m, R_Mbps: 10 }, free, 'none/zstd-3');
  assert.equal(d.mode, 'none/zstd-9', d.reason);
});

test('the shortfall scales samples only while the stream measures it: an old one does not hold back every other mode', () => {
  const { p, advance } = streamed(100, 90); // 10.5 of 41.9 MB/s achieved: a quarter
  p.recordSample('none/zstd-9', 1 << 20, 180_000, 60); // 2 × 1 MiB / 60 ms = 35 MB/s of pool time
  const early = p.measurements('none/zstd-3').modes.find((x) => x.mode === 'none/zstd-9')!;
  assert.ok(Math.abs(early.P_MBps - 34.95 * (10.49 / 41.94)) < 0.05, `scaled while it holds: ${early.P_MBps}`);
  // Ten seconds on, the stream is link-bound: no achieved figure, so no shortfall to apply, and
  // the sample is judged at its own pool rate with the doubt for not knowing it.
  advance(10_000);
  p.recordSample('none/zstd-9', 1 << 20, 180_000, 60);
  const later = p.measurements('none/zstd-3').modes.find((x) => x.mode === 'none/zstd-9')!;
  assert.ok(Math.abs(later.P_MBps - 34.95) < 0.05, `its own pool rate: ${later.P_MBps}`);
  // Two samples: 15% floor + 30%/√2 + 15% for the shortfall not measured = 51% doubt.
  assert.ok(Math.abs(later.P_lowMBps! - 34.95 * (1 - 0.15 - 0.3 / Math.SQRT2 - 0.15)) < 0.05, `doubted for the unknown shortfall: ${later.P_lowMBps}`);
});
