import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AttemptEnds } from '../engine/handoff/attempt-ends.js';

// The target's rule for attempts' ends: it runs the VM only on an end its source committed to;
// an end without a commit gives way to the next attempt's.

test('an end counts once its commit arrives; after that no newer attempt is taken', async () => {
  const ends = new AttemptEnds<string>();
  assert.equal(ends.begin(1), undefined);
  ends.ended(1, 'overlay 1');
  const end = await ends.next();
  assert.equal(end.value, 'overlay 1');
  assert.equal(ends.granted(1), true);
  assert.equal(await end.committed, true);
  assert.equal(ends.committed, 1);
  assert.match(ends.begin(2) ?? '', /attempt 1 already committed; attempt 2 is refused/);
  ends.withdraw(1);
  assert.equal(ends.committed, 1, 'a broken connection after the commit changes nothing');
});

test('an end whose connection broke before its commit gives way to the next attempt', async () => {
  const ends = new AttemptEnds<string>();
  ends.begin(1);
  ends.ended(1, 'overlay 1');
  const first = await ends.next();
  ends.withdraw(1);
  assert.equal(await first.committed, false);
  assert.equal(ends.granted(1), false, 'a late commit of a withdrawn end is not taken');
  assert.equal(ends.committed, undefined);
  assert.equal(ends.begin(2), undefined);
  ends.ended(2, 'overlay 2');
  const second = await ends.next();
  assert.equal(second.value, 'overlay 2');
  ends.granted(2);
  assert.equal(await second.committed, true);
});

test('an older attempt than one begun is refused', () => {
  const ends = new AttemptEnds<string>(3);
  assert.match(ends.begin(2) ?? '', /attempt 2 is older than attempt 3/);
  assert.equal(ends.begin(3), undefined);
});

test('a newer attempt withdraws an end still waiting for its commit; a failure ends every wait', async () => {
  const ends = new AttemptEnds<string>();
  ends.ended(3, 'overlay 3');
  const pending = await ends.next();
  assert.equal(ends.begin(4), undefined);
  assert.equal(await pending.committed, false, 'the source moved on to attempt 4 without committing 3');
  const waiting = ends.next();
  ends.fail(new Error('aborted here'));
  await assert.rejects(waiting, /aborted here/);
  ends.withdraw(4);
  await assert.rejects(ends.next(), /aborted here/);
});
