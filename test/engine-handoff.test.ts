import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { BLOCK_SIZE } from '../engine/blocks.js';
import { Cloudlet } from '../engine/cloudlet/cloudlet.js';
import { HandoffError } from '../engine/errors.js';
import { SourceHandoffs } from '../engine/handoff/source-handoff.js';
import { TargetHandoffs } from '../engine/handoff/target-handoff.js';
import { fixedControl } from '../engine/handoff/stream-control.js';
import type { StreamMeasurements } from '../engine/adaptation/measurements.js';
import { testBaseImage, tempRoot } from './support/fixtures.js';
import { devCloudletTls } from '../infra/dev-pki.js';
import { helloWith } from './support/raw-data-client.js';
import { FrameType, encodeFrame } from '../engine/wire/frames.js';

// The engine alone, for real: QEMU guests, FUSE disks, the TCP data plane, no Temporal.

let root: Awaited<ReturnType<typeof tempRoot>>;
let A: Cloudlet;
let B: Cloudlet;
let baseImageId: string;

const make = async (name: string) =>
  new Cloudlet({ name, runDir: join(root.dir, name), imageCacheDir: join(root.dir, `${name}-images`), dataHost: '127.0.0.1', prefix: 'ehoff', tls: await devCloudletTls(name) });

before(async () => {
  const base = await testBaseImage();
  root = await tempRoot('eng');
  A = await make('A');
  B = await make('B');
  await Promise.all([A.start(), B.start()]);
  await Promise.all([A.images.install(base.dir), B.images.install(base.dir)]);
  baseImageId = base.id;
});

after(async () => {
  await Promise.allSettled([A?.destroyAll(), B?.destroyAll()]);
  await Promise.allSettled([A?.stop(), B?.stop()]);
  await root?.remove();
});

test('a VM moves from A to B with verified state and a guest that goes on', async () => {
  await A.launchVm('eng-vm', baseImageId, { name: 'heartbeat', args: ['8', '100'] });
  await sleep(1500);
  const source = new SourceHandoffs(A);
  const target = new TargetHandoffs(B);
  const snap = await source.snapshot('h-ok', 'eng-vm');
  assert.ok(snap.heartbeatAtStart !== null && snap.heartbeatAtStart > 0, 'the workload was beating before the handoff');
  assert.equal(await A.vm('eng-vm').host.runState(), 'running', 'the snapshot step does not stop the VM');

  const endpoint = await target.prepare('h-ok', 'eng-vm', snap.baseImageId, 'A');
  const reports: StreamMeasurements[] = [];
  const stream = await source.stream('h-ok', endpoint, fixedControl('none/zstd-3', null, (m) => reports.push(m)));
  const [first, last] = [stream.epochs[0]!, stream.epochs.at(-1)!];
  // Each report says where the pre-copy stands (what `ehoff watch` shows); the last, sent after
  // the end was acknowledged, is the stopped epoch's, every chunk of it sent.
  const closing = reports.at(-1)?.precopy;
  assert.ok(closing, 'the stream reports its pre-copy progress');
  assert.deepEqual([closing.epoch, closing.live, closing.chunksSent], [last.epoch, false, last.memoryPages + last.diskBlocks]);
  assert.ok(first.live && first.memoryPages > 2048, `epoch 0 ran live and held the 8 MiB heap (${first.memoryPages} pages)`);
  assert.ok(first.diskBlocks > 0, 'the workload log is in the disk overlay');
  assert.ok(!last.live && last.memoryPages < first.memoryPages, `the stop-and-copy epoch is small (${last.memoryPages} pages): ${stream.stopReason}`);
  assert.equal(stream.ack.chunks, stream.stages.chunks);
  assert.ok(stream.stages.payloadBytes < stream.stages.inputBytes / 2, `the pipeline reduced the overlay (${stream.stages.payloadBytes} of ${stream.stages.inputBytes} bytes)`);
  assert.equal(await A.vm('eng-vm').host.runState() !== 'running', true, 'the source is stopped once the stream ends');
  // The target's own finish: verify against the digests sent with the overlay's end, resume.
  const { finalized: fin, resumed } = await target.finish('h-ok');
  // Committed: a connection of the source cloudlet for this handoff writes nothing any more.
  const late = await helloWith(B.dataPlane.address().port, A.config.tls, 'h-ok', { after: [encodeFrame({ type: FrameType.DeviceState, data: Buffer.alloc(64) })] });
  assert.ok(late.secured && late.refusal !== undefined, `a hello after the commit is refused (${late.refusal ?? late.error})`);
  assert.equal(fin.memoryDigest, stream.memoryDigest);
  assert.equal(fin.diskDigest, stream.diskDigest);
  assert.ok(resumed.heartbeatAfter! > stream.heartbeatAtStop!, 'the counter went on from where it stopped (the end frame carried where)');
  assert.deepEqual(await target.abort('h-ok'), { resumed: true }, 'an abort after the resume undoes nothing');
  assert.ok(stream.heartbeatAtStop! > snap.heartbeatAtStart!, 'the guest ran during the pre-copy');
  await source.retire('h-ok', 'eng-vm');
  assert.equal(A.hasVm('eng-vm'), false);
  const onB = await B.describe('eng-vm');
  assert.equal(onB.runState, 'running');
  // The moved guest keeps writing its disk through B's FUSE layer.
  const before = onB.dirtyDiskBlocks;
  await sleep(2500);
  assert.ok((await B.describe('eng-vm')).lastHeartbeat! > resumed.heartbeatAfter!);
  assert.ok((await B.describe('eng-vm')).dirtyDiskBlocks >= before);
  await B.destroyVm('eng-vm');
});

test('state corrupted in transit is caught before resume: the target refuses, the source runs on', async () => {
  await A.launchVm('bad-vm', baseImageId, { name: 'heartbeat', args: ['4', '100'] });
  await sleep(1000);
  const source = new SourceHandoffs(A);
  const target = new TargetHandoffs(B);
  const snap = await source.snapshot('h-bad', 'bad-vm');
  const endpoint = await target.prepare('h-bad', 'bad-vm', snap.baseImageId, 'A');
  const stream = await source.stream('h-bad', endpoint, fixedControl('none/none'));

  // Flip one byte of the assembled memory at the target, as a faulty link or disk would.
  const ramFile = await findRamFile('B', 'bad-vm');
  assert.ok(ramFile, 'the target assembled a RAM file');
  const ram = await open(ramFile, 'r+');
  const page = Buffer.alloc(BLOCK_SIZE);
  await ram.read(page, 0, BLOCK_SIZE, 100 * BLOCK_SIZE);
  page[17]! ^= 0xff;
  await ram.write(page, 0, BLOCK_SIZE, 100 * BLOCK_SIZE);
  await ram.close();

  await assert.rejects(target.finalize('h-bad', stream), (err: unknown) => {
    assert.ok(err instanceof HandoffError);
    assert.equal(err.code, 'STATE_MISMATCH');
    assert.match(err.message, /memory on B do not match/);
    return true;
  });
  assert.equal(B.hasVm('bad-vm'), false, 'the VM never ran at the target');
  assert.deepEqual(await target.abort('h-bad'), { resumed: false });
  const back = await source.rollback('h-bad', 'bad-vm', 'released');
  assert.equal(back.runState, 'running');
  const hb = (await A.describe('bad-vm')).lastHeartbeat!;
  await sleep(1000);
  assert.ok((await A.describe('bad-vm')).lastHeartbeat! > hb, 'the source guest goes on');
  await A.destroyVm('bad-vm');
});

test('a broken stream resumes: the next attempt reconciles with what the target holds and sends only the rest', async () => {
  // 32 MiB of text-like records, a few updated per second: megabytes on the wire, little churn.
  await A.launchVm('re-vm', baseImageId, { name: 'kvstore', args: ['32', '200'] });
  const source = new SourceHandoffs(A);
  const target = new TargetHandoffs(B);
  try {
    await sleep(3000);
    const snap = await source.snapshot('h-re', 're-vm');
    const endpoint = await target.prepare('h-re', 're-vm', snap.baseImageId, 'A');
    // Attempt 1 over a slow link, cut after its second measurement (about 2 s in).
    const cut = new AbortController();
    let reports = 0;
    const slow = fixedControl('none/zstd-3', 4, () => (++reports === 2 ? cut.abort(new Error('link cut by the test')) : undefined));
    await assert.rejects(source.stream('h-re', endpoint, slow, { attempt: 1, signal: cut.signal }), /link cut by the test/);
    assert.equal(await A.vm('re-vm').host.runState(), 'running', 'the end frame never left: the source runs on');
    // Attempt 1 again (a stream activity scheduled anew) cannot reconcile: refused, not garbled.
    await assert.rejects(source.stream('h-re', endpoint, fixedControl('none/zstd-3'), { attempt: 1 }), /attempt 1 cannot reconcile/);

    const resumed = await source.stream('h-re', endpoint, fixedControl('none/zstd-3'), { attempt: 3 });
    const r = resumed.reconciled;
    assert.ok(r, 'the resumed attempt reconciled');
    assert.ok(r.memoryPagesHeld > 200, `the target held what attempt 1 sent (${r.memoryPagesHeld} pages)`);
    assert.ok(r.memoryPagesKept > 0.75 * r.memoryPagesHeld, `most of it is kept, not sent again (${r.memoryPagesKept} of ${r.memoryPagesHeld})`);
    // The target verifies the whole state against the source's stop digests: what was kept is right.
    const { finalized } = await target.finish('h-re');
    assert.equal(finalized.memoryDigest, resumed.memoryDigest);
    assert.equal(finalized.diskDigest, resumed.diskDigest);
    await source.retire('h-re', 're-vm');
    assert.equal((await B.describe('re-vm')).runState, 'running');
  } finally {
    await target.abort('h-re').catch(() => undefined);
    for (const c of [A, B]) if (c.hasVm('re-vm')) await c.destroyVm('re-vm').catch(() => undefined);
  }
});

test("a target worker that dies after the source's commit, before its own cont, runs the VM once it is back", async () => {
  await A.launchVm('cm-vm', baseImageId, { name: 'heartbeat', args: ['4', '100'] });
  const source = new SourceHandoffs(A);
  try {
    await sleep(1000);
    const snap = await source.snapshot('h-cm', 'cm-vm');
    const endpoint = await new TargetHandoffs(B).prepare('h-cm', 'cm-vm', snap.baseImageId, 'A');
    // The stream ends with the commit frame sent; this target's `finish` never runs: its worker
    // "dies" (the cloudlet stops, the VM hosts stay) with the commit received and recorded.
    const stream = await source.stream('h-cm', endpoint, fixedControl('none/zstd-3'));
    assert.equal(B.hasVm('cm-vm'), false, 'the incoming copy waits, not yet continued');
    await B.stop();
    B = await make('B');
    await B.start();
    const { recovered } = await new TargetHandoffs(B).recover();
    assert.deepEqual(recovered, ['cm-vm (h-cm)']);
    // The restarted target verifies what it holds against the digests the end frame gave, and runs it.
    const deadline = Date.now() + 60_000;
    while ((await B.describe('cm-vm').catch(() => undefined))?.runState !== 'running' && Date.now() < deadline) await sleep(200);
    const onB = await B.describe('cm-vm');
    assert.equal(onB.runState, 'running', 'the recovered target continued the VM on the commit it had recorded');
    assert.ok(onB.lastHeartbeat !== null && onB.lastHeartbeat > stream.heartbeatAtStop!, 'the guest goes on at B from where it stopped');
    assert.notEqual(await A.vm('cm-vm').host.runState(), 'running', 'the source copy stays stopped');
    await source.retire('h-cm', 'cm-vm');
  } finally {
    for (const c of [A, B]) if (c.hasVm('cm-vm')) await c.destroyVm('cm-vm').catch(() => undefined);
  }
});

test('a target without the base image refuses before anything moves', async () => {
  const target = new TargetHandoffs(B);
  await assert.rejects(target.prepare('h-x', 'x-vm', 'base-0000000000000000', 'A'), /does not hold base image base-0000000000000000/);
});

/** The target's RAM file for a VM in preparation (its name carries a random tag): the newest. */
async function findRamFile(cloudlet: string, vmId: string): Promise<string | undefined> {
  const { readdir, stat } = await import('node:fs/promises');
  const paths = (await readdir('/dev/shm')).filter((f) => f.startsWith(`ehoff-${cloudlet}-${vmId}-`)).map((f) => `/dev/shm/${f}`);
  const dated = await Promise.all(paths.map(async (p) => [p, (await stat(p)).mtimeMs] as const));
  return dated.sort((a, b) => b[1] - a[1])[0]?.[0];
}
