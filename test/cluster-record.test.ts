import { test } from 'node:test';
import assert from 'node:assert/strict';
import { access } from 'node:fs/promises';
import { clusterRecord, processStartTicks, sweepDeadClusters } from '../infra/cluster-record.js';

const exists = (path: string) => access(path).then(() => true, () => false);

test("a crashed cluster's record is swept whatever its tag; a running cluster's is never touched", async () => {
  const deadTag = `test-dead-${process.pid}`;
  const liveTag = `test-live-${process.pid}`;
  const empty = { server: null, workers: {}, namespaces: [], hostLinks: [], relayPids: [] };
  // An owner that cannot be running: no process has this start time.
  await clusterRecord(deadTag).write({ runTag: deadTag, owner: { pid: process.pid, startTicks: '0' }, ...empty });
  await clusterRecord(liveTag).write({ runTag: liveTag, owner: { pid: process.pid, startTicks: (await processStartTicks(process.pid))! }, ...empty });
  try {
    await sweepDeadClusters();
    assert.equal(await exists(`/tmp/ehoff-${deadTag}.cluster.json`), false, 'the dead owner’s record is gone');
    assert.equal(await exists(`/tmp/ehoff-${liveTag}.cluster.json`), true, 'the running owner’s record stays');
  } finally {
    await clusterRecord(deadTag).remove();
    await clusterRecord(liveTag).remove();
  }
});
