import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MIN_DWELL_MS, chooseMode, type StreamPolicy } from '../engine/adaptation/choose-mode.js';
import type { StreamMeasurements } from '../engine/adaptation/measurements.js';
import { StreamProfiler } from '../engine/adaptation/stream-profiler.js';
import { ALL_MODES, modeId, parseModeId, stopMode } from '../engine/adaptation/mode.js';

const free: StreamPolicy = { pinnedMode: null, bandwidthCapMbps: null };

function measured(R_Mbps: number | null, modes: Array<[string, number, number]>): StreamMeasurements {
  return {
    atMs: 1000, mode: 'xor/zstd-3', R_Mbps, threads: 2, inputBytes: 1, wireBytes: 1,
    modes: modes.map(([mode, P_MBps, ratio]) => ({ mode, P_MBps, ratio, from: 'sample' as const, bytes: 1 << 20 })),
  };
}

// Figures of the order DESIGN.md gives for this machine (2 cores).
const table: Array<[string, number, number]> = [
  ['none/none', 2000, 1.0],
  ['xor/zstd-1', 300, 0.35],
  ['xor/zstd-3', 200, 0.33],
  ['xor/zstd-9', 56, 0.32],
  ['xor/xz-6', 2.2, 0.25],
];

test('a slow link picks the strongest codec, up to where its CPU cost becomes the limit', () => {
  // 5 Mbit/s = 0.625 MB/s: zstd-3 moves 0.625/0.33 = 1.89 MB/s of input; xz-6 would move
  // 0.625/0.25 = 2.5 but computes only 2.2: still the best, and now CPU-bound.
  const d = chooseMode(measured(5, table), free, 'xor/zstd-3');
  assert.equal(d.mode, 'xor/xz-6');
  assert.match(d.reason, /P 2.20 MB\/s.*CPU-bound/);
  // At 2 Mbit/s nothing can keep up with the link: the best ratio wins, network-bound.
  const slow = chooseMode(measured(2, table), free, 'xor/zstd-3');
  assert.equal(slow.mode, 'xor/xz-6');
  assert.match(slow.reason, /network-bound/);
});

test('a fast link picks a fast mode: compression there is CPU-bound', () => {
  const d = chooseMode(measured(1000, table), free, 'xor/xz-6');
  assert.equal(d.mode, 'xor/zstd-1');
  assert.match(d.reason, /min\(P, R\/r\)/);
});

test('within the margin the current mode is kept', () => {
  // 0.325 against 0.32: 1.6% more input per wire byte, inside the 3% hysteresis.
  const d = chooseMode(measured(5, [['xor/zstd-3', 200, 0.325], ['xor/zstd-9', 56, 0.32]]), free, 'xor/zstd-3');
  assert.equal(d.mode, 'xor/zstd-3');
  assert.match(d.reason, /within 3% of the best/);
  // 6.5% fewer bytes (zstd-9 against zstd-3 on kvstore) is past it.
  assert.equal(chooseMode(measured(5, [['xor/zstd-3', 200, 0.1827], ['xor/zstd-9', 56, 0.1715]]), free, 'xor/zstd-3').mode, 'xor/zstd-9');
});

test('a mode chosen moments ago is kept until it has been in use for the dwell time', () => {
  const fresh = chooseMode(measured(1000, table), free, 'xor/xz-6', MIN_DWELL_MS - 1);
  assert.equal(fresh.mode, 'xor/xz-6');
  assert.match(fresh.reason, /in use 5\.0 s, less than the 5 s/);
  assert.equal(chooseMode(measured(1000, table), free, 'xor/xz-6', MIN_DWELL_MS).mode, 'xor/zstd-1');
  // The operator's pin is not held back by it.
  assert.equal(chooseMode(measured(1000, table), { ...free, pinnedMode: 'none/gzip-9' }, 'xor/xz-6', 0).mode, 'none/gzip-9');
});

test('the stopped epoch keeps a cheap mode and replaces a costly one', () => {
  assert.equal(stopMode('xor/zstd-1'), 'xor/zstd-1');
  assert.equal(stopMode('none/gzip-1'), 'none/gzip-1');
  assert.equal(stopMode('none/none'), 'none/none');
  for (const costly of ['fossil/xz-1', 'none/xz-9', 'xor/zstd-19', 'none/gzip-9', 'fossil/zstd-1']) assert.equal(stopMode(costly), 'none/zstd-3', costly);
});

test('an operator pin wins over measurements; a cap lowers R', () => {
  assert.equal(chooseMode(measured(1000, table), { ...free, pinnedMode: 'none/gzip-9' }, 'xor/zstd-1').mode, 'none/gzip-9');
  assert.equal(chooseMode(measured(1000, table), { ...free, bandwidthCapMbps: 5 }, 'xor/zstd-1').mode, 'xor/xz-6');
});

test('without a measured R (or a cap) the mode stays', () => {
  assert.equal(chooseMode(measured(null, table), free, 'xor/zstd-3').mode, 'xor/zstd-3');
  assert.equal(chooseMode(measured(null, table), { ...free, bandwidthCapMbps: 5 }, 'xor/zstd-3').mode, 'xor/xz-6');
});

test('mode ids round-trip and unknown ones are refused', () => {
  for (const m of ALL_MODES) assert.deepEqual(parseModeId(modeId(m)), m);
  assert.equal(ALL_MODES.length, 39);
  assert.throws(() => parseModeId('xor/zstd-4'), /unknown mode 'xor\/zstd-4'/);
  assert.throws(() => parseModeId('bsdiff/none'), /unknown mode/);
});

test('the profiler measures R only while the link was kept busy', () => {
  let now = 0;
  const p = new StreamProfiler(2, () => now, 0);
  const batch = (bytes: number) => ({ seq: 0, modeId: 'xor/zstd-3', payload: new Uint8Array(bytes), rawBytes: 0, rawXxh64: '', payloadXxh64: '', busyMs: 10, classifyMs: 1, inputBytes: 1 << 20, stages: { chunks: 256, zero: 0, baseRefs: 0, selfRefs: 0, data: 256, againstPrevious: 0 } });
  // 12 batches of 1 MB queued at once (the first two only warm up); acks arrive at 10 Mbit/s.
  for (let i = 0; i < 12; i++) p.recordBatch(batch(1_000_000), 1_000_000);
  for (let i = 1; i <= 5; i++) {
    now = i * 800;
    p.recordAck({ seq: i, bytesReceived: i * 1_000_000 });
    if (i === 1) assert.equal(p.R_Mbps(), null, 'one interval is not a measurement');
  }
  const R = p.R_Mbps();
  assert.ok(R !== null && Math.abs(R - 10) < 0.5, `R ≈ 10 Mbit/s, got ${R}`);
  const m = p.measurements('xor/zstd-3');
  assert.equal(m.modes[0]?.mode, 'xor/zstd-3');
  assert.ok(Math.abs(m.modes[0]!.P_MBps - 2 * 104.86) < 1, `P is per-thread rate × threads: ${m.modes[0]!.P_MBps}`);
  assert.ok(Math.abs(m.modes[0]!.ratio - 1_000_000 / (1 << 20)) < 0.001);
});

test('the stop is planned at a rate the link kept, not at its last three seconds', () => {
  let now = 0;
  const p = new StreamProfiler(2, () => now, 0);
  const batch = (bytes: number) => ({ seq: 0, modeId: 'xor/zstd-3', payload: new Uint8Array(bytes), rawBytes: 0, rawXxh64: '', payloadXxh64: '', busyMs: 10, classifyMs: 1, inputBytes: 1 << 20, stages: { chunks: 256, zero: 0, baseRefs: 0, selfRefs: 0, data: 256, againstPrevious: 0 } });
  for (let i = 0; i < 40; i++) p.recordBatch(batch(1_000_000), 1_000_000);
  // A link that goes 20 ↔ 8 Mbit/s every 4 s; an ack every 200 ms with the window kept full.
  let received = 0;
  assert.equal(p.stopR_Mbps(), null, 'not measured before an ack');
  for (let t = 200; t <= 10_000; t += 200) {
    const mbps = Math.floor((t - 1) / 4_000) % 2 === 0 ? 20 : 8;
    received += (mbps * 1e6 * 0.2) / 8;
    now = t;
    p.recordAck({ seq: t / 200, bytesReceived: Math.round(received) });
  }
  // At 10 s the link is in a fast phase since 8 s: the last three seconds hold 1 s at 8, 2 s at 20.
  const R = p.R_Mbps()!;
  const stopR = p.stopR_Mbps()!;
  assert.ok(R > 14, `R over the last 3 s is mostly the fast phase: ${R}`);
  assert.ok(Math.abs(stopR - 8) < 0.5, `the stop is planned at the slow phase's 8 Mbit/s: ${stopR}`);
  assert.ok(stopR <= R);
});

test('a pipeline slower than the link leaves R where the busy link put it: its gaps are not link time', () => {
  let now = 0;
  const p = new StreamProfiler(2, () => now, 0);
  const batch = (bytes: number) => ({ seq: 0, modeId: 'none/zstd-19', payload: new Uint8Array(bytes), rawBytes: 0, rawXxh64: '', payloadXxh64: '', busyMs: 10, classifyMs: 1, inputBytes: 1 << 20, stages: { chunks: 256, zero: 0, baseRefs: 0, selfRefs: 0, data: 256, againstPrevious: 0 } });
  // Busy: 12 frames of 1 MB queued at once, acked at 10 Mbit/s.
  for (let i = 0; i < 12; i++) p.recordBatch(batch(1_000_000), 1_000_000);
  let received = 0;
  let seq = 0;
  for (let i = 1; i <= 12; i++) {
    now = i * 800;
    received += 1_000_000;
    p.recordAck({ seq: ++seq, bytesReceived: received });
  }
  assert.ok(Math.abs(p.R_Mbps()! - 10) < 0.5);
  // Then a heavy codec: two 150 kB frames finish together once a second; the link (10 Mbit/s,
  // 120 ms each) idles the rest. Measured from ack to ack, that read 150 kB per ~1 s: 1.2 Mbit/s.
  for (let k = 0; k < 10; k++) {
    const t0 = now + 1_000;
    now = t0;
    p.recordBatch(batch(150_000), 150_000);
    p.recordBatch(batch(150_000), 150_000);
    for (const done of [120, 240]) {
      now = t0 + done;
      received += 150_000;
      p.recordAck({ seq: ++seq, bytesReceived: received });
    }
  }
  const R = p.R_Mbps()!;
  assert.ok(R > 8, `R is still the link's, not the pipeline's pace: ${R}`);
});
