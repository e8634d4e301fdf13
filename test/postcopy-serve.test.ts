import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { open, readFile, rm, truncate } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { BLOCK_SIZE } from '../engine/blocks.js';
import { Cloudlet } from '../engine/cloudlet/cloudlet.js';
import { ramMappings } from '../engine/memory/dirty-log.js';
import { QemuVm } from '../engine/vm/qemu-vm.js';
import { SerialLog } from '../engine/vm/serial-log.js';
import { devCloudletTls } from '../infra/dev-pki.js';
import { testBaseImage, tempRoot } from './support/fixtures.js';
import { stoppedKvstoreGuest } from './support/stopped-guest.js';

// Post-copy's target side, before any of it is a handoff: a guest stopped at one QEMU resumes at
// another whose RAM file is all holes, every page it touches served on demand by the fault server
// (native/dirty-log/uffd_serve.c) from the stopped copy, and the rest pushed behind.

let root: Awaited<ReturnType<typeof tempRoot>>;
let A: Cloudlet;
const shm = `/dev/shm/ehoff-test-postcopy-${process.pid}`;
const files = ['src.ram', 'dst.ram', 'dev.state', 'disk.raw', 'qmp.sock', 'ser.sock', 'serial.log'].map((f) => `${shm}-${f}`);
let target: QemuVm | undefined;

before(async () => {
  const base = await testBaseImage();
  root = await tempRoot('postcopy');
  A = new Cloudlet({ name: 'A', runDir: join(root.dir, 'A'), imageCacheDir: join(root.dir, 'A-img'), dataHost: '127.0.0.1', prefix: 'ehoff', tls: await devCloudletTls('A') });
  await A.start();
  await A.images.install(base.dir);
});

after(async () => {
  await target?.kill().catch(() => undefined);
  await A?.destroyAll().catch(() => undefined);
  await A?.stop().catch(() => undefined);
  await root?.remove();
  for (const f of files) await rm(f, { force: true });
});

/** Pages of a tmpfs file that exist (util-linux's fincore: on tmpfs a hole has no page in memory). */
async function pagesPresent(path: string): Promise<number> {
  return Number(execFileSync('fincore', ['--bytes', '--noheadings', '--output', 'RES', path]).toString().trim()) / BLOCK_SIZE;
}

/** The VmFlags of QEMU's mapping of `ramFile` (/proc/<pid>/smaps): `um` while registered for missing pages. */
async function mappingFlags(pid: number, ramFile: string): Promise<string[]> {
  const blocks = (await readFile(`/proc/${pid}/smaps`, 'utf8')).split(/\n(?=[0-9a-f]+-[0-9a-f]+ )/);
  const block = blocks.find((b) => b.split('\n')[0]!.endsWith(` ${ramFile}`));
  return block?.match(/^VmFlags:(.*)$/m)?.[1]!.trim().split(/\s+/) ?? [];
}

test('a guest resumed with all of its RAM missing runs on: each page it touches served on demand, the rest pushed, then all there', async () => {
  const native = createRequire(import.meta.url)('ehoff-dirty-log') as { faultServer: string };
  const [srcRam, dstRam, deviceState, disk, qmpSocket, serialSocket, serialLog] = files as [string, string, string, string, string, string, string];
  const { beatBefore, record } = await stoppedKvstoreGuest(A, 'pc-vm', { ram: srcRam, deviceState, disk });
  const sizeBytes = record.machine.memoryMiB * 2 ** 20;
  await (await open(dstRam, 'w')).close();
  await truncate(dstRam, sizeBytes);

  target = await QemuVm.start(record.machine, { kernel: record.kernel, initrd: record.initrd, ramFile: dstRam, disk, qmpSocket, serialSocket, serialLog }, { awaitIncoming: true });
  assert.equal(await pagesPresent(dstRam), 0, 'QEMU started without writing its RAM: every page is still a hole');
  const [mapping] = ramMappings(await readFile(`/proc/${target.pid}/maps`, 'utf8'), dstRam);
  assert.ok(mapping, 'QEMU maps the RAM file');
  const server = spawn(native.faultServer, [String(target.pid), mapping.start.toString(16), String(mapping.length), srcRam], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise<number | null>((resolve) => server.once('exit', resolve));
  const lines = createInterface({ input: server.stdout! })[Symbol.asyncIterator]();
  assert.equal((await lines.next()).value, 'serving');
  assert.ok((await mappingFlags(target.pid!, dstRam)).includes('um'), 'the RAM mapping is registered for missing pages');

  // Loading the device state reads guest memory already (virtio rings): served like any fault.
  await target.loadDeviceState(deviceState);
  await target.cont();
  const serial = new SerialLog(serialLog);
  const firstBeat = await serial.waitForHeartbeatAbove(beatBefore, 20_000);
  assert.ok(firstBeat > beatBefore, `the guest beats on after the stop (${beatBefore} → ${firstBeat})`);
  const report = JSON.parse((await lines.next()).value as string) as { faults: number; faultServiceMedianUs: number; pushed: number; pages: number };
  assert.equal(await exited, 0, 'the server ends once every page is in');
  assert.equal(report.pages, sizeBytes / BLOCK_SIZE);
  assert.ok(report.faults > 0, `the guest faulted pages in before the push reached them (${report.faults})`);
  assert.equal(report.faults + report.pushed, report.pages, 'each page went across once: by a fault or by the push');
  assert.ok(!(await mappingFlags(target.pid!, dstRam)).includes('um'), 'and is no longer, once every page is in');
  assert.equal(await pagesPresent(dstRam), sizeBytes / BLOCK_SIZE, 'no hole is left');

  // Unregistered: the guest goes on with no server at all.
  const later = await serial.waitForHeartbeatAbove(firstBeat + 1, 10_000);
  assert.equal(await target.status(), 'running');
  // The pages the guest did not write since are the stopped copy's, byte for byte.
  await target.pause();
  const [src, dst] = [await readFile(srcRam), await readFile(dstRam)];
  let differing = 0;
  for (let off = 0; off < sizeBytes; off += BLOCK_SIZE) if (src.compare(dst, off, off + BLOCK_SIZE, off, off + BLOCK_SIZE) !== 0) differing++;
  assert.ok(differing < report.pages / 50, `only what the guest wrote since differs (${differing} of ${report.pages} pages, heartbeat ${later})`);
});
