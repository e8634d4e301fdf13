import { test } from 'node:test';
import assert from 'node:assert/strict';
import { dirtiedWithin, fitDirtyCurve, forecastHandoff, type ForecastInput } from '../engine/placement/forecast-handoff.js';

const base: ForecastInput = {
  overlayBytes: 40e6,
  dirtyBytesPerS: 0.2e6,
  workingSetBytes: null,
  wireRatio: 0.5,
  linkBytesPerS: 1.25e6, // 10 Mbit/s
  memoryBytes: 512 * 2 ** 20,
  stopOverheadMs: 300,
  stepsOverheadS: 3,
  downtimeBudgetMs: 1000,
  maxLiveEpochs: 8,
};

test('a quiet guest converges: the first epoch sends the overlay, the next what it dirtied meanwhile', () => {
  const f = forecastHandoff(base);
  // Epoch 0: 20 MB on the wire, 16 s; the guest dirties 3.2 MB raw meanwhile (1.3 s on the wire: too much
  // for the budget), epoch 1 sends it in 1.28 s, during which 0.256 MB are dirtied: 102 ms + 300 ms stop.
  assert.equal(f.converges, true);
  assert.equal(f.liveEpochs, 2);
  assert.ok(Math.abs(f.downtimeMs - 402.4) < 0.5, String(f.downtimeMs));
  assert.ok(Math.abs(f.totalS - (3 + 16 + 1.28 + 0.4024)) < 0.01, String(f.totalS));
  assert.ok(Math.abs(f.wireBytes - (20e6 + 1.6e6 + 0.128e6)) < 1, String(f.wireBytes));
});

test('a guest that dirties faster than the link drains stops early, over budget, and says why', () => {
  const f = forecastHandoff({ ...base, dirtyBytesPerS: 4e6 });
  assert.equal(f.converges, false);
  assert.ok(f.liveEpochs <= 2);
  assert.ok(f.downtimeMs > 1000);
  assert.match(f.reason, /stopped shrinking/);
});

test('a faster link or better compression predicts less time; the stop comes once what is left fits the budget', () => {
  const slow = forecastHandoff(base);
  const fast = forecastHandoff({ ...base, linkBytesPerS: 3.125e6 });
  const tighter = forecastHandoff({ ...base, wireRatio: 0.25 });
  assert.ok(fast.totalS < slow.totalS && fast.wireBytes < slow.wireBytes);
  assert.ok(tighter.totalS < slow.totalS && tighter.wireBytes < slow.wireBytes);
  // One live epoch suffices there: what it leaves (1.3 MB, 1.6 MB raw) fits, so no second one is sent.
  for (const f of [fast, tighter]) assert.deepEqual([f.converges, f.liveEpochs, f.downtimeMs <= 1000], [true, 1, true]);
});

test('a guest that rewrites a working set: the curve through two windows gives back its rate and its set', () => {
  const rate = 4e6;
  const w = 30e6;
  const fit = fitDirtyCurve(1, dirtiedWithin(1, rate, w), dirtiedWithin(3, rate, w));
  assert.ok(Math.abs(fit.rate - rate) / rate < 1e-6, String(fit.rate));
  assert.ok(Math.abs(fit.workingSetBytes! - w) / w < 1e-6, String(fit.workingSetBytes));
  assert.deepEqual(fitDirtyCurve(1, 1e6, 3e6), { rate: 1e6, workingSetBytes: null }, 'three times as much in three times as long: no saturation');
  assert.deepEqual(fitDirtyCurve(1, 2e6, 2e6), { rate: 2e6, workingSetBytes: 2e6 }, 'nothing more after the first window: all of it at once');
  // Saturation predicts less to resend than the straight line through the first window.
  const straight = forecastHandoff({ ...base, dirtyBytesPerS: rate, workingSetBytes: null });
  const saturating = forecastHandoff({ ...base, dirtyBytesPerS: rate, workingSetBytes: 10e6 });
  assert.ok(saturating.wireBytes < straight.wireBytes, `${saturating.wireBytes} < ${straight.wireBytes}`);
  assert.ok(saturating.downtimeMs < straight.downtimeMs, `${saturating.downtimeMs} < ${straight.downtimeMs}`);
});
