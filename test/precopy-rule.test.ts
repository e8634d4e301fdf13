import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MAX_THROTTLE, THROTTLE_STEP, afterDrain, afterLiveEpoch, epochsToConverge, finalEpochEstimateMs, type EpochEnd } from '../engine/handoff/precopy-rule.js';

// The pre-copy's stop rule, apart from the stream that runs it: each verdict and the reason an
// auditor reads in the handoff's history.

const policy = { downtimeBudgetMs: 300, maxLiveEpochs: 8, postCopy: 'never' as const };
const postCopy = { ...policy, postCopy: 'auto' as const };
const epoch = (o: Partial<EpochEnd>): EpochEnd => ({ liveEpochs: 2, pendingChunks: 5_000, previousChunks: 10_000, estimateMs: 2_000, guestPausedShare: 0, lastEpochMs: 4_000, ...o });

test('what is left fits the budget: stop, converged', () => {
  const v = afterLiveEpoch(epoch({ pendingChunks: 400, estimateMs: 250 }), policy);
  assert.equal(v.action, 'stop');
  assert.ok(v.action === 'stop' && v.converged);
  assert.match(v.reason, /^converged after 2 live epochs: 400 chunks left, ~250 ms to send$/);
  const slowed = afterLiveEpoch(epoch({ estimateMs: 300, guestPausedShare: 0.5 }), policy);
  assert.match(slowed.reason, /guest slowed to 50% of its time/, 'at the budget exactly it converges, and says the guest was slowed');
});

test('convergence wins over the epoch limit; the limit stops an unconverged pre-copy', () => {
  const fits = afterLiveEpoch(epoch({ liveEpochs: 8, estimateMs: 100 }), policy);
  assert.ok(fits.action === 'stop' && fits.converged, 'within the budget at the last epoch allowed: converged');
  const v = afterLiveEpoch(epoch({ liveEpochs: 8 }), policy);
  assert.deepEqual(v, { action: 'stop', converged: false, reason: 'stopped after 8 live epochs (the most allowed), 5000 chunks left' });
});

test('a shrinking dirty set over the budget: go on', () => {
  const v = afterLiveEpoch(epoch({ pendingChunks: 9_000, previousChunks: 10_000 }), policy);
  assert.equal(v.action, 'continue', '9000 after 10000 shrank by the 10% asked');
  assert.match(v.reason, /9000 chunks left, ~2000 ms to send, over the 300 ms budget; the dirty set shrank from 10000/);
});

test('a dirty set that does not shrink slows the guest step by step, then stops the iterations', () => {
  let share = 0;
  const steps: number[] = [];
  for (let n = 1; n < 8; n++) {
    const v = afterLiveEpoch(epoch({ liveEpochs: n, pendingChunks: 9_500, previousChunks: 10_000, guestPausedShare: share }), policy);
    if (v.action === 'stop') {
      assert.equal(v.converged, false);
      assert.match(v.reason, /not converging even with the guest paused 75% of the time: 9500 chunks left after 4 epochs/);
      break;
    }
    assert.equal(v.action, 'slow-guest', `epoch ${n}`);
    if (v.action === 'slow-guest') share = v.guestPausedShare;
    steps.push(share);
  }
  assert.deepEqual(steps, [THROTTLE_STEP, 2 * THROTTLE_STEP, MAX_THROTTLE]);
});

test('after the drain: catch up while it shrinks and is over half the budget, else pause', () => {
  assert.equal(afterDrain({ pendingChunks: 600, previousChunks: Infinity, estimateMs: 400 }, policy).action, 'catch-up');
  assert.match(afterDrain({ pendingChunks: 600, previousChunks: Infinity, estimateMs: 400 }, policy).reason, /600 chunks dirtied while the link drained, ~400 ms to send/);
  assert.deepEqual(afterDrain({ pendingChunks: 200, previousChunks: 600, estimateMs: 150 }, policy), { action: 'pause', reason: '200 chunks left, ~150 ms to send, within half the budget' });
  assert.equal(afterDrain({ pendingChunks: 580, previousChunks: 600, estimateMs: 390 }, policy).action, 'pause', 'not shrinking by 10%: catching up is no use');
  assert.equal(afterDrain({ pendingChunks: 500, previousChunks: 600, estimateMs: 330 }, policy).action, 'catch-up');
});

test('the final epoch estimate: its bytes at the expected ratio over the kept link rate, else at the last epoch\'s pace', () => {
  // 1000 chunks × 4096 B × 0.1 = 409.6 kB = 3.2768 Mbit over 8 Mbit/s: 409.6 ms.
  assert.equal(finalEpochEstimateMs(1000, { stopR_Mbps: 8, ratio: 0.1, lastEpoch: { chunks: 10, ms: 1 } }), 409.6);
  assert.equal(finalEpochEstimateMs(1000, { stopR_Mbps: 4, ratio: 0.1, lastEpoch: undefined }), 819.2, 'half the rate, twice the time');
  // No rate: 2000 chunks went in 500 ms, so 1000 take 250 ms whatever the ratio.
  assert.equal(finalEpochEstimateMs(1000, { stopR_Mbps: null, ratio: 0.1, lastEpoch: { chunks: 2000, ms: 500 } }), 250);
  assert.equal(finalEpochEstimateMs(1000, { stopR_Mbps: 0, ratio: 0.1, lastEpoch: { chunks: 2000, ms: 500 } }), 250, 'a zero rate is no rate');
  assert.equal(finalEpochEstimateMs(1000, { stopR_Mbps: null, ratio: 0.1, lastEpoch: undefined }), Infinity, 'nothing to go on: never within a budget');
  assert.equal(finalEpochEstimateMs(0, { stopR_Mbps: 8, ratio: 0.1, lastEpoch: undefined }), 0);
});

test('live epochs to converge: geometric at the last epoch\'s pace, none when it does not shrink', () => {
  assert.equal(epochsToConverge({ estimateMs: 250, lastEpochMs: 1_000 }, 300), 0, 'already within the budget');
  // q = 0.5: 2000 → 1000 → 500 → 250 ms: three more epochs.
  assert.equal(epochsToConverge({ estimateMs: 2_000, lastEpochMs: 4_000 }, 300), 3);
  assert.equal(epochsToConverge({ estimateMs: 2_000, lastEpochMs: 2_100 }, 300), Infinity, 'q = 0.95 shrinks by less than SHRINK');
  assert.equal(epochsToConverge({ estimateMs: 2_000, lastEpochMs: 0 }, 300), Infinity, 'an epoch of no time: no pace to go on');
});

test('post-copy allowed: chosen as soon as the pace says the budget is out of reach, with the rates in its reason', () => {
  // The guest dirtied in 3 s what takes 3.2 s to send: it outruns the link.
  const v = afterLiveEpoch(epoch({ liveEpochs: 1, pendingChunks: 80_000, estimateMs: 3_200, lastEpochMs: 3_000 }), postCopy);
  assert.equal(v.action, 'post-copy');
  assert.match(v.reason, /^post-copy after 1 live epochs: the guest dirtied 873\.8 Mbit\/s of pages and the link drains 819\.2 Mbit\/s of them, so the pre-copy does not converge; 80000 chunks left, ~3200 ms to send stopped$/);
  // The same epoch with post-copy not allowed: the guest is slowed instead, as before.
  assert.equal(afterLiveEpoch(epoch({ liveEpochs: 1, pendingChunks: 80_000, previousChunks: 80_000, estimateMs: 3_200, lastEpochMs: 3_000 }), policy).action, 'slow-guest');
});

test('post-copy allowed: a pre-copy that converges within the epochs left goes on, one that would not switches now', () => {
  // q = 0.5 from 2000 ms: three more epochs; after epoch 5 of 8 that fits, after epoch 6 not.
  const fits = afterLiveEpoch(epoch({ liveEpochs: 5 }), postCopy);
  assert.equal(fits.action, 'continue');
  assert.match(fits.reason, /converging in ~3 more live epochs/);
  const late = afterLiveEpoch(epoch({ liveEpochs: 6 }), postCopy);
  assert.equal(late.action, 'post-copy');
  assert.match(late.reason, /converging would take 3 more live epochs, past the 8 allowed/);
  // Post-copy never slows the guest: a set that does not shrink but whose pace still converges goes on.
  assert.equal(afterLiveEpoch(epoch({ liveEpochs: 2, pendingChunks: 9_500, previousChunks: 9_000 }), postCopy).action, 'continue');
  // And convergence still wins: within the budget it stops, converged.
  const done = afterLiveEpoch(epoch({ liveEpochs: 7, estimateMs: 200, lastEpochMs: 210 }), postCopy);
  assert.ok(done.action === 'stop' && done.converged);
});
