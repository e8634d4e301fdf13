import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { runHandoff } from '../client/start-handoff.js';
import { executeWorkflow } from '../client/execute-workflow.js';
import { startEmbeddedCluster, type EmbeddedCluster } from '../infra/embedded-cluster.js';
import type { Workflow } from '@temporalio/common';
import { describeVm, destroyVm, launchVm } from '../workflows/vm-lifecycle.js';
import { testBaseImage, tempRoot } from './support/fixtures.js';

// Hybrid post-copy end to end: the embedded Temporal dev server, a worker per cloudlet, a guest
// that rewrites its memory faster than the (capped) link drains it. With post-copy allowed the
// pre-copy switches early, the target resumes with the stale pages missing and fetches them from
// the stopped source; the source's copy goes only once the whole memory is confirmed.

let root: Awaited<ReturnType<typeof tempRoot>>;
let cluster: EmbeddedCluster;

before(async () => {
  const base = await testBaseImage();
  root = await tempRoot('e2e-pc');
  cluster = await startEmbeddedCluster({
    runTag: `e2e-pc-${process.pid}`,
    devServer: { dbFile: join(root.dir, 'temporal.db') },
    cloudlets: [
      { name: 'A', baseImages: [base.dir], imageCacheDir: join(root.dir, 'A-images') },
      { name: 'B', baseImages: [base.dir], imageCacheDir: join(root.dir, 'B-images') },
    ],
  });
  // Two 32 MiB float grids rewritten step after step: far more than 40 Mbit/s can drain.
  await workflow(launchVm, { vmId: 'pc-vm', cloudlet: 'A', baseImageId: base.id, workload: { name: 'fluid', args: ['32', '50'] } });
});

after(async () => {
  await cluster?.stop();
  await root?.remove();
});

const workflow = <W extends Workflow>(wf: W, ...args: Parameters<W>) => executeWorkflow(cluster.client, wf, ...args);

test('a guest that outruns the link moves by post-copy: switched early, verified, every page fetched and checked, the whole memory confirmed, one copy running', async (t) => {
  await sleep(3_000);
  const result = await runHandoff(cluster.client, { vmId: 'pc-vm', source: 'A', target: 'B', postCopy: 'auto', bandwidthCapMbps: 40 });
  const pc = result.postCopy;
  t.diagnostic(`post-copy: ${JSON.stringify(pc)}; downtime ${result.downtimeMs} ms, guest gap ${result.guestGapMs} ms, total ${result.totalMs} ms`);
  assert.equal(result.postCopyPolicy, 'auto');
  assert.ok(pc, `the handoff switched to post-copy (${result.precopy.stopReason})`);
  assert.match(pc.reason, /^post-copy after \d+ live epochs: the guest dirtied .* Mbit\/s of pages and the link drains .* Mbit\/s of them/);
  const decisions = result.precopy.decisions ?? [];
  assert.equal(decisions.filter((d) => d.action === 'post-copy').length, 1, 'the switch is a decision in the history');
  assert.ok(decisions.length <= 4, `decided early, not after eight epochs (${decisions.map((d) => d.action).join(', ')})`);
  assert.equal(result.verified, true, 'what the target held at the switch matched the source');
  assert.equal(result.guestContinued, true);
  assert.ok(pc.stalePages > 0 && pc.fetch.pages === pc.stalePages, `${pc.stalePages} stale pages, all fetched`);
  assert.ok(pc.fetch.remoteFaults > 0, 'the guest faulted pages in from the source');
  assert.equal(pc.fetch.refused, 0);
  const pushFloorMs = ((pc.fetch.bytesReceived * 8) / 40e6) * 1000;
  assert.ok(pc.fetch.ms >= pushFloorMs * 0.7, `the push kept the operator's 40 Mbit/s cap: ${pc.fetch.bytesReceived} bytes in ${pc.fetch.ms} ms`);
  assert.ok(pc.memoryDigestConfirmed, 'the source confirmed the whole memory before its copy went');
  assert.ok(result.epochs.at(-1)!.memoryPages === 0, 'the stopped epoch sent no memory pages: they came after the resume');

  // Exactly one copy: B runs it and its guest goes on; A has none.
  const first = await workflow(describeVm, { vmId: 'pc-vm', cloudlet: 'B' });
  assert.equal(first.runState, 'running');
  await sleep(1_000);
  const second = await workflow(describeVm, { vmId: 'pc-vm', cloudlet: 'B' });
  assert.ok(second.lastHeartbeat! > first.lastHeartbeat!, `the guest beats on at B (${first.lastHeartbeat} → ${second.lastHeartbeat})`);
  await assert.rejects(workflow(describeVm, { vmId: 'pc-vm', cloudlet: 'A' }), (err: unknown) => {
    assert.match(String((((err as Error).cause as Error | undefined)?.cause as Error | undefined)?.message), /no VM 'pc-vm' on cloudlet A/);
    return true;
  });
  assert.equal(pc.fetch.reconnects, 0, 'no page channel broke');
});

test('disk blocks written up to the stop go by post-copy too: held back, checked against their stopped hashes, filled while the guest runs', async (t) => {
  // One fluid guest at a time on two cores: the first test's goes.
  await workflow(destroyVm, { vmId: 'pc-vm', cloudlet: 'B' }).catch(() => undefined);
  const base = await testBaseImage();
  // The same grids, and 128 KiB/s of checkpoint lines synced to its disk every beat.
  await workflow(launchVm, { vmId: 'pcd-vm', cloudlet: 'A', baseImageId: base.id, workload: { name: 'fluid', args: ['32', '50', '128'] } });
  await sleep(3_000);
  const result = await runHandoff(cluster.client, { vmId: 'pcd-vm', source: 'A', target: 'B', postCopy: 'auto', bandwidthCapMbps: 40 });
  const pc = result.postCopy;
  t.diagnostic(`post-copy: ${JSON.stringify(pc)}; epochs ${JSON.stringify(result.epochs)}; downtime ${result.downtimeMs} ms`);
  assert.ok(pc, `the handoff switched to post-copy (${result.precopy.stopReason})`);
  assert.equal(result.verified, true, 'the disk it held, the stale blocks counted by their stopped hashes, matched the source');
  assert.equal(result.epochs.at(-1)!.diskBlocks, 0, 'the stopped epoch sent no disk blocks: they came after the resume');
  assert.ok((pc.fetch.diskBlocks ?? 0) > 0, `disk blocks were left stale and fetched (${pc.fetch.diskBlocks})`);
  assert.equal(pc.fetch.refused, 0);
  assert.equal(pc.fetch.reconnects, 0, 'no page channel broke: a push the source ended is not a reconnect');
  assert.equal(result.guestContinued, true);
  assert.ok(pc.memoryDigestConfirmed, 'the source confirmed the whole memory before its copy went');
  // The guest's disk at B: readable end to end (the blocks it lacked were fetched, none is left missing).
  const before = await workflow(describeVm, { vmId: 'pcd-vm', cloudlet: 'B' });
  await sleep(1_000);
  const after = await workflow(describeVm, { vmId: 'pcd-vm', cloudlet: 'B' });
  assert.ok(after.lastHeartbeat! > before.lastHeartbeat!, 'the guest beats on at B, writing its disk');
});
