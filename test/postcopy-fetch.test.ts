import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFile, open, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { Compressor } from 'zstd-napi';
import { BLOCK_SIZE } from '../engine/blocks.js';
import { Cloudlet } from '../engine/cloudlet/cloudlet.js';
import { PageHashTable, ZERO_PAGE_SHA } from '../engine/memory/page-hash-table.js';
import { loadHash64 } from '../engine/pipeline/checksum.js';
import { zstdBounded } from '../engine/pipeline/codecs.js';
import { PostCopyFetch } from '../engine/postcopy/page-fetcher.js';
import { StoppedPageService } from '../engine/postcopy/stopped-page-service.js';
import { DataPlaneServer, type PageSource } from '../engine/wire/data-plane-server.js';
import { FrameDecoder, FrameType, WIRE_PROTOCOL, WIRE_VERSION, encodeFrame, type Frame } from '../engine/wire/frames.js';
import { QemuVm } from '../engine/vm/qemu-vm.js';
import { SerialLog } from '../engine/vm/serial-log.js';
import { devCloudletTls } from '../infra/dev-pki.js';
import type { CloudletTls } from '../engine/wire/cloudlet-tls.js';
import { testBaseImage, tempRoot } from './support/fixtures.js';
import { stoppedKvstoreGuest } from './support/stopped-guest.js';

// Post-copy's pages over the data plane: a guest stopped at A resumes at B with a third of its
// RAM stale (holes), each page it touches fetched from A's stopped copy on the fault channel, the
// rest pushed on the other, every page checked against its stop-time hash on arrival (one is
// corrupted on the way and must be refused and fetched again), and the whole memory's digest
// confirmed once the last page is in.

let root: Awaited<ReturnType<typeof tempRoot>>;
let A: Cloudlet;
let tls: { A: CloudletTls; B: CloudletTls; C: CloudletTls };
let sourcePlane: DataPlaneServer;
const shm = `/dev/shm/ehoff-test-pcfetch-${process.pid}`;
const files = ['src.ram', 'dst.ram', 'dev.state', 'disk.raw', 'qmp.sock', 'ser.sock', 'serial.log'].map((f) => `${shm}-${f}`);
let target: QemuVm | undefined;
let service: StoppedPageService | undefined;

before(async () => {
  const base = await testBaseImage();
  root = await tempRoot('pcfetch');
  tls = { A: await devCloudletTls('A'), B: await devCloudletTls('B'), C: await devCloudletTls('C') };
  A = new Cloudlet({ name: 'A', runDir: join(root.dir, 'A'), imageCacheDir: join(root.dir, 'A-img'), dataHost: '127.0.0.1', prefix: 'ehoff', tls: tls.A });
  await A.start();
  await A.images.install(base.dir);
  sourcePlane = new DataPlaneServer('127.0.0.1', tls.A);
  await sourcePlane.start();
});

after(async () => {
  await target?.kill().catch(() => undefined);
  await service?.close();
  await sourcePlane?.stop().catch(() => undefined);
  await A?.destroyAll().catch(() => undefined);
  await A?.stop().catch(() => undefined);
  await root?.remove();
  for (const f of files) await rm(f, { force: true });
});

/** Pages of a tmpfs file that exist (util-linux's fincore: on tmpfs a hole has no page in memory). */
function pagesPresent(path: string): number {
  return Number(execFileSync('fincore', ['--bytes', '--noheadings', '--output', 'RES', path]).toString().trim()) / BLOCK_SIZE;
}

/** A page source that flips one byte of the first page it pushes, once: a page spoiled on the way. */
function corruptingOnce(inner: PageSource): PageSource & { corrupted: number[] } {
  const corrupted: number[] = [];
  const recompress = new Compressor();
  return {
    target: inner.target,
    corrupted,
    fault: (runs, send) => inner.fault(runs, send),
    pushAll: (runs, send, signal) =>
      inner.pushAll(runs, async (p) => {
        if (corrupted.length === 0) {
          const raw = zstdBounded(p.packed, p.indices.length * BLOCK_SIZE);
          raw[100] = raw[100]! ^ 0xff;
          corrupted.push(p.indices[0]!);
          return send({ ...p, packed: recompress.compress(raw) });
        }
        return send(p);
      }, signal),
  };
}

test('a guest resumed with a third of its RAM stale runs on: faults fetched from the stopped source ahead of the push, each page checked, a spoiled one refetched, the digest confirmed', async () => {
  const [srcRam, dstRam, deviceState, disk, qmpSocket, serialSocket, serialLog] = files as [string, string, string, string, string, string, string];
  const { beatBefore, record } = await stoppedKvstoreGuest(A, 'pcf-vm', { ram: srcRam, deviceState, disk });
  const sizeBytes = record.machine.memoryMiB * 2 ** 20;
  const memoryPages = sizeBytes / BLOCK_SIZE;

  // What a pre-copy would have left: the target holds every page but a third, which it holds stale.
  const src = await readFile(srcRam);
  const hash64 = await loadHash64();
  const stale = Uint32Array.from({ length: Math.ceil(memoryPages / 3) }, (_, k) => 3 * k);
  const plan = { pages: stale };
  const stopHashes = BigUint64Array.from(stale, (i) => hash64(src.subarray(i * BLOCK_SIZE, (i + 1) * BLOCK_SIZE)));
  await copyFile(srcRam, dstRam);
  const dst = await open(dstRam, 'r+');
  for (const i of stale) await dst.write(Buffer.alloc(BLOCK_SIZE, 0xee), 0, BLOCK_SIZE, i * BLOCK_SIZE);
  await dst.close();
  // The stopped state's digest, and what the target holds at the switch: the stale pages' entries
  // are not the stopped ones, so only the pages that arrive can make the digest come out right.
  const held = new PageHashTable(memoryPages);
  for (let i = 0; i < memoryPages; i++) held.setPage(i, src.subarray(i * BLOCK_SIZE, (i + 1) * BLOCK_SIZE));
  const expectedDigest = held.digest();
  for (const i of stale) held.set(i, ZERO_PAGE_SHA.map((b) => b ^ 1));

  service = await StoppedPageService.open({ ramFile: srcRam, memoryPages }, { pages: stale, stopHashes: Promise.resolve(stopHashes) }, 'B');
  const source = corruptingOnce(service);
  sourcePlane.servePages('pcf-handoff', source);

  target = await QemuVm.start(record.machine, { kernel: record.kernel, initrd: record.initrd, ramFile: dstRam, disk, qmpSocket, serialSocket, serialLog }, { awaitIncoming: true });
  const logged: string[] = [];
  const fetch = await PostCopyFetch.start({
    handoffId: 'pcf-handoff', source: { ...sourcePlane.address(), cloudlet: 'A' }, tls: tls.B, qemuPid: target.pid!, ramFile: dstRam, memoryPages, plan,
    held: { table: held, expectedDigest }, log: (l) => logged.push(l),
  });
  assert.ok(pagesPresent(dstRam) <= memoryPages - stale.length + 64, 'the stale pages were holes when the fault server began');
  // The device state's load reads guest memory already (virtio rings): its faults go to A.
  await target.loadDeviceState(deviceState);
  await target.cont();
  const serial = new SerialLog(serialLog);
  const firstBeat = await serial.waitForHeartbeatAbove(beatBefore, 30_000);
  assert.ok(firstBeat > beatBefore, `the guest beats on after the stop (${beatBefore} → ${firstBeat})`);

  const report = await fetch.done;
  assert.equal(report.pages, stale.length);
  assert.ok(report.remoteFaults > 0, `the guest faulted pages in from A before the push brought them (${report.remoteFaults})`);
  assert.ok(report.faultLatencyMedianMs !== null && report.faultLatencyMedianMs < 1_000, `a fault's page came in ${report.faultLatencyMedianMs} ms (median)`);
  assert.equal(source.corrupted.length, 1);
  assert.equal(report.refused, 1, `the spoiled page ${source.corrupted[0]} was refused on arrival: ${logged.join('; ')}`);
  assert.equal(report.memoryDigest, expectedDigest, 'with the last page in, the memory is the stopped state');
  assert.equal(pagesPresent(dstRam), memoryPages, 'no hole is left');
  // Each stale page crossed once and the spoiled one twice, but for a fault that raced the push to a page.
  const crossed = service.served.faultPages + service.served.pushedPages;
  assert.ok(crossed >= stale.length + 1 && crossed <= stale.length + 1 + report.remoteFaults, `${crossed} pages crossed for ${stale.length} stale`);

  const later = await serial.waitForHeartbeatAbove(firstBeat + 1, 10_000);
  assert.equal(await target.status(), 'running');
  // The spoiled page is the stopped copy's at the target, unless the guest wrote it since.
  await target.pause();
  const now = await readFile(dstRam);
  let differing = 0;
  for (let off = 0; off < sizeBytes; off += BLOCK_SIZE) if (src.compare(now, off, off + BLOCK_SIZE, off, off + BLOCK_SIZE) !== 0) differing++;
  assert.ok(differing < memoryPages / 50, `only what the guest wrote since differs (${differing} of ${memoryPages} pages, heartbeat ${later})`);
});

test('a page channel opens only for the cloudlet the handoff went to, and only for a handoff whose pages are served', async () => {
  const ask = (who: CloudletTls, handoffId: string) =>
    new Promise<Frame>((resolve, reject) => {
      const addr = sourcePlane.address();
      const socket = connect({ host: addr.host, port: addr.port, cert: who.cert, key: who.key, ca: who.ca, minVersion: 'TLSv1.3', servername: 'A', checkServerIdentity: () => undefined });
      const decoder = new FrameDecoder();
      socket.pipe(decoder);
      decoder.once('data', (f: Frame) => (socket.destroy(), resolve(f)));
      decoder.once('error', reject);
      socket.once('secureConnect', () => {
        socket.write(encodeFrame({ type: FrameType.PageHello, hello: { protocol: WIRE_PROTOCOL, version: WIRE_VERSION, handoffId, channel: 'fault' } }));
        socket.write(encodeFrame({ type: FrameType.PageRequest, request: { runs: [[0, 1]] } }));
      });
    });
  const fromC = await ask(tls.C, 'pcf-handoff');
  assert.equal(fromC.type, FrameType.Error, 'another cloudlet of the site is refused');
  const unknown = await ask(tls.B, 'pcf-other');
  assert.equal(unknown.type, FrameType.Error, 'a handoff whose pages are not served here is refused');
  assert.equal(sourcePlane.refused.get('not from B'), 1);
  assert.equal(sourcePlane.refused.get('no pages served for that handoff'), 1);
});
