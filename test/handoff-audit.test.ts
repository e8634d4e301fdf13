import { test } from 'node:test';
import assert from 'node:assert/strict';
import { currentDetails, handoffDetails, handoffStartOptions, handoffSummary, triggerWords } from '../workflows/handoff-audit.js';
import { chooseTarget } from '../engine/placement/choose-target.js';

const input = { vmId: 'kvstore-7', source: 'A', target: 'B' };

test("a handoff's summary says what moves where, why and over what", () => {
  assert.equal(handoffSummary({ input, trigger: 'edge.user.moved /app l1', linkMbps: 10 }), 'kvstore-7 A → B, user moved, 10 Mbit/s');
  assert.equal(handoffSummary({ input: { ...input, bandwidthCapMbps: 5 }, trigger: 'operator' }), 'kvstore-7 A → B, operator, capped at 5 Mbit/s');
  assert.equal(triggerWords('edge.cloudlet.drain /ops d1'), 'drain');
  assert.equal(triggerWords('edge.cloudlet.overloaded /ehoff/load-monitor x'), 'overload');
  assert.equal(triggerWords('something.else /x 1'), 'something.else');
});

test('its details hold the request and every candidate of the placement, with why', () => {
  const candidate = (cloudlet: string, runningVms: number) => ({ cloudlet, location: { lat: 52.4, lon: 13.1 }, capacityVms: 4, runningVms, online: true, draining: false, holdsBase: true });
  const placement = chooseTarget({ vmId: 'kvstore-7', source: 'A' }, [candidate('A', 1), candidate('B', 0), candidate('C', 3)]);
  const md = handoffDetails({ input, trigger: 'edge.cloudlet.drain /ops d1', placementPolicy: 'least-loaded', placement, searchAttributes: true });
  assert.match(md, /Move VM `kvstore-7` from \*\*A\*\* to \*\*B\*\*/);
  assert.match(md, /- placement: least-loaded/);
  assert.match(md, /\| A \| excluded \| the VM runs there now \|/);
  assert.match(md, /\| C \| lost \| more loaded: 3 of 4 VMs against 0 of 4 \|/);
  // The operator's post-copy policy is on the record whichever it is.
  assert.match(md, /- post-copy: never/);
  assert.match(handoffDetails({ input: { ...input, postCopy: 'auto' }, trigger: 'operator', placementPolicy: 'operator', searchAttributes: true }), /- post-copy: allowed \(auto\)/);
});

test('search attributes go on the start only where the namespace has them', () => {
  const withSa = handoffStartOptions({ input, trigger: 'operator', placementPolicy: 'operator', searchAttributes: true });
  assert.deepEqual(withSa.typedSearchAttributes?.map((p) => [p.key.name, p.value]), [
    ['EdgeVmId', 'kvstore-7'], ['EdgeSourceCloudlet', 'A'], ['EdgeTargetCloudlet', 'B'], ['EdgeTrigger', 'operator'], ['EdgePlacementPolicy', 'operator'],
  ]);
  assert.equal(withSa.workflowId, 'handoff-kvstore-7');
  const without = handoffStartOptions({ input, trigger: 'operator', placementPolicy: 'operator', searchAttributes: false });
  assert.equal('typedSearchAttributes' in without, false);
});

test('the current details show the phase, the mode with P and r, and the last pre-copy decision', () => {
  const md = currentDetails({
    step: 'stream', mode: 'none/zstd-3', pinnedMode: null, bandwidthCapMbps: null, modeSwitches: 1,
    measurements: { atMs: 12_000, mode: 'none/zstd-3', R_Mbps: 9.6, threads: 2, inputBytes: 40e6, wireBytes: 12e6, modes: [{ mode: 'none/zstd-3', P_MBps: 48, ratio: 0.31, from: 'stream', bytes: 40e6 }] },
    decision: { epoch: 2, action: 'continue', reason: '…', pendingChunks: 900, estimateMs: 820, budgetMs: 300, R_Mbps: 9.6, ratio: 0.3, dirtyBytesPerS: 250_000, guestPausedShare: 0, atMs: 11_000 },
  });
  assert.match(md, /\*\*stream\*\* · mode `none\/zstd-3` · 1 mode switch$/m);
  assert.match(md, /40\.0 MB read → 12\.0 MB sent · P 48\.0 MB\/s, r 0\.31 · R 9\.6 Mbit\/s/);
  assert.match(md, /epoch 2: \*\*continue\*\* — 900 chunks left, ~820 ms to send \(budget 300 ms\) · dirty 2\.0 Mbit\/s vs R 9\.6 Mbit\/s/);
});
