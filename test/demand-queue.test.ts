import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DemandQueue } from '../engine/disk/demand-queue.js';

test('blocks waited on are handed over once each, ascending; an asker with none waits for the first', async () => {
  const q = new DemandQueue();
  q.add(9);
  q.add(3);
  q.add(9);
  assert.deepEqual(await q.next(1_000), [3, 9]);
  const waiting = q.next(5_000);
  setTimeout(() => q.add(7), 20);
  assert.deepEqual(await waiting, [7]);
});

test('an asker gets [] when nothing came in time, and a newer asker takes over from an older one', async () => {
  const q = new DemandQueue();
  assert.deepEqual(await q.next(20), []);
  assert.deepEqual(await q.next(0), []);
  const older = q.next(5_000);
  const newer = q.next(5_000);
  assert.deepEqual(await older, []);
  q.add(1);
  assert.deepEqual(await newer, [1]);
});

test('a block still waited on is handed again once long enough has passed since it was handed: a worker that died with it is not waited for', async () => {
  const q = new DemandQueue();
  q.add(4);
  assert.deepEqual(await q.next(0), [4]);
  q.remind([4], 2_000);
  assert.deepEqual(await q.next(0), [], 'just handed: not again yet');
  q.remind([4, 6], 2_000, Date.now() + 2_500);
  assert.deepEqual(await q.next(0), [4, 6], 'handed 2.5 s ago, and one never handed');
});
