import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { AnswerWatch } from '../engine/wire/answer-watch.js';

// The source's watch on a target that owes answers: silence counts only while an answer is owed,
// every answer restarts it, and a target that owes one and says nothing for the limit is reported once.

function watchWithClock(limitMs: number) {
  const clock = { t: 0 };
  const silences: number[] = [];
  const watch = new AnswerWatch(limitMs, (ms) => silences.push(ms), () => clock.t, 5);
  return { clock, silences, watch };
}

test('a peer that owes nothing may be quiet for as long as it likes', async () => {
  const { clock, silences, watch } = watchWithClock(1_000);
  try {
    clock.t = 60_000;
    await sleep(20);
    assert.equal(watch.silentMs(), null);
    assert.deepEqual(silences, []);
  } finally {
    watch.stop();
  }
});

test('silence counts from the first owed answer, and each answer restarts it', async () => {
  const { clock, silences, watch } = watchWithClock(1_000);
  try {
    clock.t = 5_000; // quiet before anything was owed: not counted
    watch.expect();
    watch.expect();
    clock.t = 5_900;
    assert.equal(watch.silentMs(), 900);
    watch.heard(); // one of two answered: alive, still owing one
    assert.equal(watch.answersOwed, 1);
    clock.t = 6_800;
    await sleep(20);
    assert.deepEqual(silences, [], '900 ms since the last answer is under the limit');
    watch.heard();
    assert.equal(watch.silentMs(), null, 'owing nothing, it is not silent');
  } finally {
    watch.stop();
  }
});

test('a peer that owes an answer and gives none for the limit is reported, once', async () => {
  const { clock, silences, watch } = watchWithClock(1_000);
  try {
    watch.expect(2);
    clock.t = 999;
    await sleep(20);
    assert.deepEqual(silences, []);
    clock.t = 1_500;
    await sleep(20);
    clock.t = 3_000;
    await sleep(20);
    assert.deepEqual(silences, [1_500], 'reported at the first check past the limit, and not again');
  } finally {
    watch.stop();
  }
});
