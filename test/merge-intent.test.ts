import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mergeDrain, mergeMove, type InFlightHandoff } from '../engine/placement/merge-intent.js';

const moving: InFlightHandoff = { workflowId: 'handoff-v1', vmId: 'v1', source: 'A', target: 'B' };

test('a move with nothing in flight starts', () => {
  assert.deepEqual(mergeMove('v1', 'B', undefined, 'queue'), { outcome: 'started', reason: 'no handoff of v1 in flight' });
});

test('the same move again joins the one in flight, whatever the rule', () => {
  for (const rule of ['queue', 'refuse'] as const) {
    const d = mergeMove('v1', 'B', moving, rule);
    assert.equal(d.outcome, 'joined');
    assert.equal(d.outcome === 'joined' && d.workflowId, 'handoff-v1');
    assert.match(d.reason, /already moving A → B \(handoff-v1\): the same move/);
  }
});

test('a move elsewhere is queued behind the one in flight, or refused, by the declared rule; never raced', () => {
  const queued = mergeMove('v1', 'C', moving, 'queue');
  assert.deepEqual(queued, { outcome: 'queued', behind: 'handoff-v1', reason: 'v1 is already moving A → B (handoff-v1); the move to C starts from there once it ends' });
  const refused = mergeMove('v1', 'C', moving, 'refuse');
  assert.equal(refused.outcome, 'refused');
  assert.match(refused.reason, /would race it/);
  // Back to the cloudlet it is leaving: the same rules, said as what it is.
  assert.match(mergeMove('v1', 'A', moving, 'queue').reason, /the move back to A waits for it to end/);
  assert.equal(mergeMove('v1', 'A', moving, 'refuse').outcome, 'refused');
});

test('a drain that overlaps a move does not move the VM twice', () => {
  const leaving = mergeDrain('A', 'v1', moving);
  assert.equal(leaving.outcome, 'joined', 'a VM already leaving the drained cloudlet: that handoff is its move');
  assert.equal(leaving.outcome === 'joined' && leaving.workflowId, 'handoff-v1');
  const arriving = mergeDrain('B', 'v1', moving);
  assert.equal(arriving.outcome, 'queued', 'a VM arriving at the drained cloudlet is moved off after it lands');
  assert.equal(arriving.outcome === 'queued' && arriving.behind, 'handoff-v1');
  assert.equal(mergeDrain('C', 'v1', moving).outcome, 'refused', 'a VM moving between two other cloudlets is not on the drained one');
  assert.deepEqual(mergeDrain('A', 'v2', undefined), { outcome: 'started', reason: 'v2 is moved off A' });
});
