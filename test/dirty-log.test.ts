import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { BLOCK_SIZE } from '../engine/blocks.js';
import { Cloudlet } from '../engine/cloudlet/cloudlet.js';
import { armDirtyLog, ascendingPages, ramMappings, type DirtyLog } from '../engine/memory/dirty-log.js';
import { MemoryTracker, changedShare, type BasePageHashes, type ScanPool } from '../engine/memory/memory-tracker.js';
import { PageHashTable, ZERO_PAGE_SHA } from '../engine/memory/page-hash-table.js';
import { loadHash64 } from '../engine/pipeline/checksum.js';
import { devCloudletTls } from '../infra/dev-pki.js';
import { testBaseImage, tempRoot } from './support/fixtures.js';

// The kernel's dirty log in place of hashing the whole RAM file each epoch: the tracker's rules
// with a stand-in log, then the real thing on a running QEMU guest, checked against a whole-file
// scan of the paused guest.

test('the RAM file is found among QEMU mappings, with the page each one starts at', () => {
  const maps = [
    '55d0c0a00000-55d0c0b00000 r--p 00000000 08:01 123 /usr/bin/qemu-system-x86_64',
    '7f0000000000-7f0040000000 rw-s 00000000 00:1a 77 /dev/shm/ehoff-a/vms/vm 1/ram',
    '7f1000000000-7f1000200000 rw-s 00400000 00:1a 77 /dev/shm/ehoff-a/vms/vm 1/ram',
    '7f2000000000-7f2000001000 rw-p 00000000 00:00 0 ',
    '7f3000000000-7f3000001000 rw-s 00000000 00:1a 78 /dev/shm/ehoff-a/vms/vm 1/ram (deleted)',
  ].join('\n');
  assert.deepEqual(ramMappings(maps, '/dev/shm/ehoff-a/vms/vm 1/ram'), [
    { start: 0x7f0000000000n, length: 2 ** 30, firstPage: 0 },
    { start: 0x7f1000000000n, length: 2 * 2 ** 20, firstPage: 1024 },
  ]);
  assert.deepEqual(ramMappings(maps, '/dev/shm/other'), []);
});

test('without a QEMU that maps the file, the handoff says why it hashes instead', async () => {
  assert.deepEqual((await armDirtyLog(null, '/dev/shm/x')).tracking, { kind: 'hash-scan', why: 'QEMU is not running' });
  const own = await armDirtyLog(process.pid, '/dev/shm/ehoff-not-mapped');
  assert.equal(own.log, null);
  assert.equal(own.tracking.kind, 'hash-scan');
  assert.match(own.tracking.kind === 'hash-scan' ? own.tracking.why : '', /does not map \/dev\/shm\/ehoff-not-mapped|did not load|EHOFF_DIRTY_LOG=scan/);
});

/** The writer: maps a tmpfs file shared (as QEMU maps guest RAM), prints where, writes the pages it is told. */
const WRITER = `
import mmap, os, sys, ctypes
f = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
os.ftruncate(f, int(sys.argv[2]))
m = mmap.mmap(f, int(sys.argv[2]), mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
print(ctypes.addressof(ctypes.c_char.from_buffer(m)), flush=True)
for line in sys.stdin:
    for p in line.split():
        m[int(p) * 4096 + 9] = (m[int(p) * 4096 + 9] + 1) % 256
    print('written', flush=True)
`;

test("the native log over a process mapping a tmpfs file: exactly the pages written, past one call's 4096 regions", async () => {
  const native = createRequire(import.meta.url)('ehoff-dirty-log') as { arm(pid: number, start: bigint, length: number): void; collect(pid: number, start: bigint, length: number): Uint32Array; preloadLibrary: string };
  // The interpreter itself, not a wrapper script: a wrapper would take the preload for itself.
  const python = spawnSync('python3', ['-c', 'import sys; print(sys.executable)'], { encoding: 'utf8' }).stdout.trim();
  const file = `/dev/shm/ehoff-test-dirtylog-${process.pid}`;
  const length = 64 << 20;
  const child = spawn(python, ['-c', WRITER, file, String(length)], { env: { ...process.env, LD_PRELOAD: native.preloadLibrary }, stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  const write = async (pages: number[]) => {
    child.stdin!.write(`${pages.join(' ')}\n`);
    assert.equal((await lines.next()).value, 'written');
  };
  try {
    const start = BigInt((await lines.next()).value as string);
    native.arm(child.pid!, start, length);
    assert.deepEqual([...native.collect(child.pid!, start, length)], [], 'nothing written since arming');
    // Every other page: 8192 separate regions, two ioctl calls' worth.
    const even = Array.from({ length: length / BLOCK_SIZE / 2 }, (_, k) => 2 * k);
    await write(even);
    assert.deepEqual([...native.collect(child.pid!, start, length)], even);
    assert.deepEqual([...native.collect(child.pid!, start, length)], [], 'reported pages are protected again');
    await write([5, 16383]);
    assert.deepEqual([...native.collect(child.pid!, start, length)], [5, 16383]);
    assert.throws(() => native.collect(child.pid!, start + 1n, length), /page-aligned/);
  } finally {
    child.stdin!.end();
    child.kill();
    await rm(file, { force: true });
  }
});

/** A log that reports what the test says was written. */
class ScriptedLog implements DirtyLog {
  written: number[] = [];
  failNext = false;
  collect(): Uint32Array {
    if (this.failNext) throw new Error('PAGEMAP_SCAN failed');
    const out = Uint32Array.from(this.written).sort();
    this.written = [];
    return out;
  }
}

/** A RAM file of zero pages in a temp dir, a tracker of it whose base is all zeros, and a way to write a page. */
async function zeroRam(pages: number) {
  const hash = await loadHash64();
  const dir = await mkdtemp(join(tmpdir(), 'ehoff-test-dirtylog-'));
  const path = join(dir, 'ram');
  await writeFile(path, Buffer.alloc(pages * BLOCK_SIZE));
  const sha = new PageHashTable(pages);
  for (let i = 0; i < pages; i++) sha.set(i, ZERO_PAGE_SHA);
  const base: BasePageHashes = { held: new BigUint64Array(pages).fill(hash(Buffer.alloc(BLOCK_SIZE))), sha };
  return {
    hash,
    path,
    tracker: MemoryTracker.fromBase(base, hash),
    async write(index: number, byte: number): Promise<void> {
      const fh = await open(path, 'r+');
      await fh.write(Buffer.alloc(BLOCK_SIZE, byte), 0, BLOCK_SIZE, index * BLOCK_SIZE);
      await fh.close();
    },
    remove: () => rm(dir, { recursive: true, force: true }),
  };
}

test('with a log, a scan after the whole one hashes what the log reports and what was found but not sent', async () => {
  const { hash, path, tracker, write, remove } = await zeroRam(4096);
  try {
    const scanned: Array<{ from: number; to: number; among?: number[] }> = [];
    const pool: ScanPool = {
      threads: 2,
      changedPages: (task) => {
        scanned.push({ from: task.from, to: task.to, among: task.among && Array.from(task.among) });
        return changedShare(task, hash);
      },
    };
    const log = new ScriptedLog();
    tracker.useDirtyLog(log);

    // Written before the log was armed: only a whole scan can find it, and the first one is.
    await write(7, 1);
    assert.deepEqual(await tracker.changedPagesOnPool(path, pool), [7]);
    assert.ok(scanned.every((s) => s.among === undefined), 'the first scan reads the whole file');
    assert.deepEqual(scanned.map((s) => [s.from, s.to]), [[0, 2048], [2048, 4096]]);
    tracker.sent(7, Buffer.alloc(BLOCK_SIZE, 1));

    // Written since: the log lists 9 and 3000 (3000 rewritten with the bytes it held: no change).
    scanned.length = 0;
    await write(9, 2);
    log.written = [9, 3000];
    assert.deepEqual(await tracker.changedPagesOnPool(path, pool), [9]);
    assert.deepEqual(scanned, [{ from: 9, to: 3001, among: [9, 3000] }], 'only the listed pages are read');

    // 9 was found but never read for sending: the log will not list it again, the tracker does.
    scanned.length = 0;
    log.written = [100];
    await write(100, 3);
    assert.deepEqual(await tracker.changedPagesOnPool(path, pool), [9, 100]);
    tracker.sent(9, Buffer.alloc(BLOCK_SIZE, 2));
    tracker.sent(100, Buffer.alloc(BLOCK_SIZE, 3));

    // Nothing written, nothing pending: nothing read at all.
    scanned.length = 0;
    assert.deepEqual(await tracker.changedPagesOnPool(path, pool), []);
    assert.equal(scanned.length, 0, 'nothing read');

    // A scan left after its first share: what the log reported stays for the next scan.
    log.written = Array.from({ length: 600 }, (_, k) => 1000 + k);
    for (const i of [1000, 1599]) await write(i, 4);
    const shares = tracker.changedPagesByShare(path, pool, 1);
    await shares.next();
    await shares.return(undefined);
    assert.deepEqual(await tracker.changedPagesOnPool(path, pool), [1000, 1599]);

    // A reconcile that says the target holds other content than this: sent again.
    tracker.sent(1000, Buffer.alloc(BLOCK_SIZE, 4));
    tracker.sent(1599, Buffer.alloc(BLOCK_SIZE, 4));
    tracker.reconciled(7, Buffer.alloc(BLOCK_SIZE, 1), ZERO_PAGE_SHA, false);
    assert.deepEqual(await tracker.changedPagesOnPool(path, pool), [7]);
    tracker.sent(7, Buffer.alloc(BLOCK_SIZE, 1));

    // A log that fails may have re-protected pages it never reported: every scan reads it all now.
    log.failNext = true;
    await write(2222, 5);
    scanned.length = 0;
    assert.deepEqual(await tracker.changedPagesOnPool(path, pool), [2222]);
    assert.ok(scanned.length > 0 && scanned.every((s) => s.among === undefined), 'a whole scan');
    assert.equal(tracker.dirtyLogFailure, 'PAGEMAP_SCAN failed');
  } finally {
    await remove();
  }
});

test("the log's walks become one ascending list without repeats, whatever order and overlap they came in", () => {
  const list = (...p: number[]) => Uint32Array.from(p);
  const ascending = list(1, 5, 9);
  assert.equal(ascendingPages([ascending]), ascending, 'an ascending walk is taken as it is');
  assert.deepEqual([...ascendingPages([list(1, 5, 9, 5, 6, 12)])], [1, 5, 6, 9, 12], 'a walk that went back over pages');
  assert.deepEqual([...ascendingPages([list(300, 7), list(7, 2)])], [2, 7, 300], 'overlapping mappings');
  assert.deepEqual([...ascendingPages([list(), list()])], []);
});

test('a log that reports a page past the RAM file is not trusted: every scan reads the whole file from then on', async () => {
  const pages = 1024;
  const { hash, path, tracker, write, remove } = await zeroRam(pages);
  try {
    const scanned: Array<number[] | undefined> = [];
    const pool: ScanPool = { threads: 1, changedPages: (task) => (scanned.push(task.among && Array.from(task.among)), changedShare(task, hash)) };
    const log = new ScriptedLog();
    tracker.useDirtyLog(log);
    assert.deepEqual(await tracker.changedPagesOnPool(path, pool), [], 'the first, whole scan');
    await write(3, 9);
    log.written = [3, pages];
    scanned.length = 0;
    assert.deepEqual(await tracker.changedPagesOnPool(path, pool), [3], 'the written page, found by reading everything');
    assert.deepEqual(scanned, [undefined], 'a whole scan, not the listed pages');
    assert.equal(tracker.dirtyLogFailure, `the dirty log reported page ${pages}, past the RAM file's ${pages} pages`);
  } finally {
    await remove();
  }
});

describeRealGuest();

/** On a running QEMU guest (kvstore writing 200 records a second), the log against the whole-file truth. */
function describeRealGuest(): void {
  let root: Awaited<ReturnType<typeof tempRoot>>;
  let A: Cloudlet;

  before(async () => {
    const base = await testBaseImage();
    root = await tempRoot('dirtylog');
    A = new Cloudlet({ name: 'A', runDir: join(root.dir, 'A'), imageCacheDir: join(root.dir, 'A-images'), dataHost: '127.0.0.1', prefix: 'ehoff', tls: await devCloudletTls('A') });
    await A.start();
    await A.images.install(base.dir);
    await A.launchVm('dl-vm', base.id, { name: 'kvstore', args: ['32', '200'] });
  });

  after(async () => {
    await A?.destroyAll().catch(() => undefined);
    await A?.stop().catch(() => undefined);
    await root?.remove();
  });

  test('on a running guest the log finds every page whose bytes changed: the paused digest equals a whole-file scan', async () => {
    const vm = A.vm('dl-vm');
    // Which scans read listed pages only, and which the whole file.
    const listedScans: boolean[] = [];
    const pool: ScanPool = {
      threads: A.codecPool().threads,
      changedPages: (task) => {
        listedScans.push(task.among !== undefined);
        return A.codecPool().changedPages(task);
      },
    };
    const hash = await loadHash64();
    const base = await A.basePageHashes(vm.base);
    const qemuPid = (await vm.host.status()).qemuPid;
    const { log, tracking } = await armDirtyLog(qemuPid, vm.files.ramFile);
    assert.deepEqual(tracking, { kind: 'dirty-log' }, `the kernel dirty log is in use on this machine (${JSON.stringify(tracking)})`);
    const tracker = MemoryTracker.fromBase(base, hash);
    tracker.useDirtyLog(log!);
    const ram = await open(vm.files.ramFile, 'r');
    const page = Buffer.alloc(BLOCK_SIZE);
    // As an epoch does: read each changed page and record what was read.
    const send = async (changed: number[]) => {
      for (const i of changed) {
        await ram.read(page, 0, BLOCK_SIZE, i * BLOCK_SIZE);
        tracker.sent(i, page);
      }
    };
    try {
      const whole = await tracker.changedPagesOnPool(vm.files.ramFile, pool);
      assert.ok(whole.length > 100, `the guest differs from its base (${whole.length} pages)`);
      await send(whole);
      assert.ok(listedScans.length > 0 && listedScans.every((l) => !l), 'the first scan reads the whole file');
      listedScans.length = 0;
      const live: number[] = [];
      for (let epoch = 0; epoch < 3; epoch++) {
        await sleep(700);
        const changed = await tracker.changedPagesOnPool(vm.files.ramFile, pool);
        live.push(changed.length);
        await send(changed);
      }
      assert.ok(live.every((n) => n > 0), `the running guest writes between scans (${live.join(', ')} pages changed)`);
      assert.ok(Math.max(...live) < tracker.pages / 10, `and the log reports a small part of its ${tracker.pages} pages (${live.join(', ')})`);

      await vm.host.pause();
      await send(await tracker.changedPagesOnPool(vm.files.ramFile, pool));
      assert.equal(tracker.dirtyLogFailure, null);
      assert.ok(listedScans.length > 0 && listedScans.every((l) => l), 'every later scan read only the pages the log listed');
      // The truth: a tracker without a log, hashing every page of the paused guest's RAM.
      const truth = MemoryTracker.fromBase(base, hash);
      const all = await truth.changedPagesOnPool(vm.files.ramFile, pool);
      for (const i of all) {
        await ram.read(page, 0, BLOCK_SIZE, i * BLOCK_SIZE);
        truth.sent(i, page);
      }
      assert.equal(tracker.digest(), truth.digest(), 'what the log-led epochs read is the paused RAM, page for page');
      assert.deepEqual(await tracker.changedPagesOnPool(vm.files.ramFile, pool), [], 'paused, nothing more is written');
      await vm.host.cont();

      // Armed again (a retried attempt), the older log gives way rather than take the newer one's writes.
      const again = await armDirtyLog(qemuPid, vm.files.ramFile);
      assert.ok(again.log);
      assert.throws(() => log!.collect(), /armed again by a later handoff attempt/);
    } finally {
      await ram.close();
    }
  });
}
