import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rm, writeFile } from 'node:fs/promises';
import { BLOCK_SIZE } from '../engine/blocks.js';
import { zstdBounded } from '../engine/pipeline/codecs.js';
import { chunkOfDiskBlock, pageRuns, planPosition, runPages, splitChunks } from '../engine/postcopy/plan.js';
import { FAULT_PREPAGE, StoppedPageService } from '../engine/postcopy/stopped-page-service.js';
import { encodeStaleDiskHashes, staleDiskOf } from '../engine/postcopy/stopped-disk-blocks.js';
import { endSchema } from '../engine/wire/frames.js';
import type { PagesPayload } from '../engine/wire/frames.js';

// The source's side of a post-copy apart from any guest: which pages it serves, in what order,
// and what it refuses.

test('page runs: ascending pages to runs and back, positions in the plan, a request past the plan refused', () => {
  const pages = Uint32Array.from([0, 1, 2, 7, 9, 10]);
  assert.deepEqual(pageRuns(pages), [[0, 3], [7, 1], [9, 2]]);
  assert.deepEqual(runPages(pageRuns(pages), 6), pages);
  assert.equal(planPosition({ pages }, 9), 4);
  assert.equal(planPosition({ pages }, 8), -1);
  assert.equal(planPosition({ pages }, 11), -1);
  assert.throws(() => runPages([[0, 2 ** 31]], 6), /2147483648 pages asked for where at most 6 are to come/);
});

test('the push sends every page asked for once, goes on after the last fault (pre-paging), skips what a fault sent', async () => {
  const file = `/dev/shm/ehoff-test-pcpages-${process.pid}.ram`;
  // Page i holds the byte i: what arrives says which page it is.
  const pages = 400;
  const ram = Buffer.alloc(pages * BLOCK_SIZE);
  for (let i = 0; i < pages; i++) ram.fill(i & 0xff, i * BLOCK_SIZE, (i + 1) * BLOCK_SIZE);
  await writeFile(file, ram);
  const stale = Uint32Array.from({ length: 200 }, (_, k) => 2 * k);
  // Each page's stop-time hash stands in as its index times 3: each frame must carry its own pages' hashes.
  const service = await StoppedPageService.open({ ramFile: file, memoryPages: pages }, { pages: stale, stopHashes: Promise.resolve(BigUint64Array.from(stale, (i) => BigInt(3 * i))) }, 'B');
  try {
    const order: number[] = [];
    const check = (p: PagesPayload) => {
      const raw = zstdBounded(p.packed, p.indices.length * BLOCK_SIZE);
      for (const [k, i] of p.indices.entries()) {
        assert.equal(raw[k * BLOCK_SIZE + 5], i & 0xff, `page ${i} carries its own bytes`);
        assert.equal(p.stopHashes[k], BigInt(3 * i), `and its own stop-time hash`);
      }
    };
    let faulted = false;
    /** What the fault channel sent. */
    const frames: number[][] = [];
    await service.pushAll(pageRuns(stale), async (p) => {
      check(p);
      order.push(...p.indices);
      // After the first frame, the guest faults page 300: the push goes on from 302.
      if (!faulted) {
        faulted = true;
        await service.fault([[300, 1]], async (f) => {
          check(f);
          frames.push([...f.indices]);
        });
      }
    });
    await service.prepagedSent();
    assert.deepEqual(frames, [[300], Array.from({ length: FAULT_PREPAGE }, (_, k) => 302 + 2 * k)], 'the faulted page alone, then the next stale pages behind it');
    const answered = frames.flat();
    assert.deepEqual(order.slice(0, 64), Array.from({ length: 64 }, (_, k) => 2 * k), 'the first frame: the first 64 stale pages, ascending');
    assert.equal(order[64], 302 + 2 * FAULT_PREPAGE, `then on from the page after those: ${order.slice(60, 70)}`);
    assert.equal(new Set(order).size, order.length, 'no page pushed twice');
    assert.deepEqual([...order, ...answered].sort((a, b) => a - b), [...stale], 'every stale page went once, 300 and its followers on the fault channel');
    assert.deepEqual(service.served, { faultPages: 1 + FAULT_PREPAGE, pushedPages: 199 - FAULT_PREPAGE, pushes: 1 });
    await assert.rejects(service.fault([[1, 1]], async () => undefined), /names page 1, which the target holds already/);
  } finally {
    await service.close();
    await rm(file, { force: true });
  }
});

test('a plan that names disk blocks: chunks past the memory are read from the stopped disk, each beside its stop hash', async () => {
  const file = `/dev/shm/ehoff-test-pcdisk-${process.pid}.ram`;
  const memoryPages = 16;
  const ram = Buffer.alloc(memoryPages * BLOCK_SIZE);
  for (let i = 0; i < memoryPages; i++) ram.fill(i, i * BLOCK_SIZE, (i + 1) * BLOCK_SIZE);
  await writeFile(file, ram);
  // Disk block b holds 0x80 + b; the read fills the buffer it is handed.
  const disk = { readBlock: async (b: number, into: Buffer) => into.fill(0x80 + b) };
  const chunks = Uint32Array.from([14, 15, memoryPages + 2, memoryPages + 3]);
  assert.deepEqual(splitChunks(chunks, memoryPages), { pages: Uint32Array.from([14, 15]), diskBlocks: Uint32Array.from([2, 3]) });
  assert.equal(chunkOfDiskBlock(2, memoryPages), memoryPages + 2);
  const service = await StoppedPageService.open({ ramFile: file, memoryPages, disk }, { pages: chunks, stopHashes: Promise.resolve(BigUint64Array.from(chunks, (c) => BigInt(c) * 7n)) }, 'B');
  const memoryOnly = await StoppedPageService.open({ ramFile: file, memoryPages }, { pages: chunks, stopHashes: Promise.resolve(new BigUint64Array(4)) }, 'B');
  try {
    const sent: PagesPayload[] = [];
    await service.fault([[15, 1], [memoryPages + 2, 2]], async (p) => void sent.push(p));
    const raw = zstdBounded(sent[0]!.packed, 3 * BLOCK_SIZE);
    assert.deepEqual([...sent[0]!.indices], [15, memoryPages + 2, memoryPages + 3]);
    assert.deepEqual([raw[0], raw[BLOCK_SIZE], raw[2 * BLOCK_SIZE]], [15, 0x82, 0x83]);
    assert.deepEqual([...sent[0]!.stopHashes], [15n * 7n, BigInt(memoryPages + 2) * 7n, BigInt(memoryPages + 3) * 7n]);
    await assert.rejects(memoryOnly.fault([[memoryPages + 2, 1]], async () => undefined), /serves memory only/);
  } finally {
    await service.close();
    await memoryOnly.close();
    await rm(file, { force: true });
  }
});

test("the end frame's stale disk blocks: ascending blocks of the disk, one SHA-256 each (null: zeros), else refused", () => {
  const sha = 'ab'.repeat(32);
  const h = Buffer.from(sha, 'hex');
  const { blocks, sha256 } = staleDiskOf({ runs: [[4, 2], [9, 1]], sha256: encodeStaleDiskHashes([h, null, h]) }, 16);
  assert.deepEqual([...blocks], [4, 5, 9]);
  assert.equal(sha256.get(5), null);
  assert.deepEqual(sha256.get(9), h);
  assert.deepEqual([...staleDiskOf(undefined, 16).blocks], []);
  assert.throws(() => staleDiskOf({ runs: [[4, 2]], sha256: encodeStaleDiskHashes([h]) }, 16), /names 2 stale disk blocks and gives 1 hashes/);
  assert.throws(() => staleDiskOf({ runs: [[15, 2]], sha256: encodeStaleDiskHashes([h, h]) }, 16), /not ascending blocks of the 16-block disk/);
  const end = endSchema.safeParse({ batches: 0, chunks: 0, deviceStateBytes: 0, deviceStateSha256: sha, memoryDigest: sha, diskDigest: sha, heartbeatAtStop: null, postCopy: { staleRuns: [], staleDisk: { runs: [[1, 2]], sha256: encodeStaleDiskHashes([h]) }, host: 'h', port: 1 } });
  assert.equal(end.success, false, 'a frame that names more blocks than it hashes is refused');
});
