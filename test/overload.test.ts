import { test } from 'node:test';
import assert from 'node:assert/strict';
import { OVERLOAD_THRESHOLD, SUSTAIN_MS, isOverloaded, vmsToRelieve } from '../engine/placement/overload.js';

const every5s = (from: number, to: number, load: (t: number) => number) =>
  Array.from({ length: Math.floor((to - from) / 5_000) + 1 }, (_, k) => ({ atMs: from + k * 5_000, load: load(from + k * 5_000) }));

test('overloaded only when the load stays above the threshold for the whole window', () => {
  assert.equal(OVERLOAD_THRESHOLD, 0.85);
  const now = 100_000;
  assert.deepEqual(isOverloaded(every5s(0, now, () => 0.93), now), { overloaded: true, reason: 'above 85% for 30 s (lowest 93%)' });
  // One dip inside the window, and it is a spike that passes, not an overload.
  const dip = every5s(0, now, (t) => (t === 80_000 ? 0.6 : 0.95));
  assert.deepEqual(isOverloaded(dip, now), { overloaded: false, reason: 'fell to 60% within the last 30 s (threshold 85%)' });
  // A dip before the window no longer counts.
  assert.equal(isOverloaded(every5s(0, now, (t) => (t === 60_000 ? 0.6 : 0.95)), now).overloaded, true);
  // Too new to judge: the samples do not reach back SUSTAIN_MS.
  assert.deepEqual(isOverloaded(every5s(now - SUSTAIN_MS + 5_000, now, () => 0.99), now), { overloaded: false, reason: 'not yet 30 s of samples' });
});

test('one VM that suffices alone is moved: of those, the one with the smallest overlay', () => {
  const d = vmsToRelieve(1.0, [
    { vmId: 'big-hog', load: 0.4, expectedOverlayBytes: 300e6 },
    { vmId: 'small-hog', load: 0.2, expectedOverlayBytes: 40e6 },
    { vmId: 'idle', load: 0.01, expectedOverlayBytes: 1e6 },
  ]);
  assert.deepEqual(d.vmIds, ['small-hog']);
  assert.ok(Math.abs(d.loadAfter - 0.8) < 1e-9);
  assert.equal(d.reason, 'small-hog alone takes 20% off for the smallest overlay of those that suffice (40.0 MB)');
});

test('when none suffices alone, the most load per byte goes first until the load is under the threshold', () => {
  const d = vmsToRelieve(1.2, [
    { vmId: 'a', load: 0.2, expectedOverlayBytes: 100e6 }, // 2.0e-9 per byte
    { vmId: 'b', load: 0.2, expectedOverlayBytes: 50e6 }, //  4.0e-9 per byte
    { vmId: 'c', load: 0.1, expectedOverlayBytes: 10e6 }, // 10.0e-9 per byte
  ]);
  assert.deepEqual(d.vmIds, ['c', 'b', 'a']);
  assert.match(d.reason, /^no VM suffices alone; 3 moved, most load per byte first \(160\.0 MB in all\), load to 70%$/);
  const short = vmsToRelieve(1.5, [{ vmId: 'a', load: 0.2, expectedOverlayBytes: 1e6 }, { vmId: 'b', load: 0.1, expectedOverlayBytes: 1e6 }]);
  assert.deepEqual(short.vmIds, ['a', 'b']);
  assert.match(short.reason, /still 120%: every VM with load is moved/);
});

test('a cloudlet at or under the threshold moves nothing', () => {
  assert.deepEqual(vmsToRelieve(0.85, [{ vmId: 'a', load: 0.5, expectedOverlayBytes: 1 }]), { vmIds: [], loadAfter: 0.85, reason: 'load 85% is not above 85%' });
});
