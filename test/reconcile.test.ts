import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BLOCK_SIZE } from '../engine/blocks.js';
import { blockHash } from '../engine/image/image-digest.js';
import { loadHash64 } from '../engine/pipeline/checksum.js';
import { MemoryTracker, changedShare, type BasePageHashes, type ScanPool } from '../engine/memory/memory-tracker.js';
import { PageHashTable } from '../engine/memory/page-hash-table.js';
import { blocksTargetLacks, heldBlocks, heldPages, keepHeldSends, seedTracker } from '../engine/handoff/reconcile.js';
import { SentChunkCache } from '../engine/pipeline/sent-chunk-cache.js';
import { Space } from '../engine/pipeline/chunk-records.js';
import { HELD_PREFIX_BYTES, decodeHoldings, encodeHoldings, encodedHoldingsBytes } from '../engine/wire/holdings.js';

// The reconcile of a resumed stream, its decisions alone: which chunks the target names, which
// of them the source need not send again. (test/engine-handoff.test.ts resumes a real stream.)

const PAGES = 16;
const page = (fill: number) => Buffer.alloc(BLOCK_SIZE, fill);

function table(pages: Buffer[]): PageHashTable {
  const t = new PageHashTable(pages.length);
  pages.forEach((p, i) => t.setPage(i, p));
  return t;
}

async function baseHashes(pages: Buffer[]): Promise<BasePageHashes> {
  const hash = await loadHash64();
  return { held: BigUint64Array.from(pages, (p) => hash(p)), sha: table(pages) };
}

test('holdings survive encode → decode, and a malformed frame is refused by what is wrong', () => {
  const h = {
    memory: { indices: Uint32Array.from([3, 5, 90_000]), prefixes: Buffer.from('a'.repeat(24)) },
    disk: { indices: Uint32Array.from([7]), prefixes: Buffer.from('b'.repeat(8)) },
  };
  const wire = encodeHoldings(h);
  assert.equal(wire.length, encodedHoldingsBytes(h));
  assert.deepEqual(decodeHoldings(wire), h);
  assert.throws(() => decodeHoldings(wire.subarray(0, wire.length - 1)), /disk records run past the frame/);
  assert.throws(() => decodeHoldings(Buffer.concat([wire, Buffer.alloc(1)])), /1 bytes after the disk records/);
  const unordered = encodeHoldings({ memory: { indices: Uint32Array.from([5, 3]), prefixes: Buffer.alloc(16) }, disk: h.disk });
  assert.throws(() => decodeHoldings(unordered), /memory index 3 is not above 5/);
});

test('a resumed stream sends the pages the target lacks, and its digest counts what the target kept', async () => {
  const hash = await loadHash64();
  const base = Array.from({ length: PAGES }, (_, i) => page(i));
  // The broken attempt got pages 3 and 5 across; since then 5 changed again and 7 changed.
  const atTarget = base.map((p, i) => (i === 3 ? page(0xa3) : i === 5 ? page(0xa5) : p));
  const atSource = atTarget.map((p, i) => (i === 5 ? page(0xc5) : i === 7 ? page(0xc7) : p));
  const held = heldPages(table(atTarget), table(base));
  assert.deepEqual([...held.indices], [3, 5], 'the target names the pages it holds other than the base');
  assert.deepEqual(held.prefixes.subarray(0, HELD_PREFIX_BYTES), blockHash(page(0xa3)).subarray(0, HELD_PREFIX_BYTES));

  const dir = await mkdtemp(join(tmpdir(), 'ehoff-test-reconcile-'));
  try {
    const ramPath = join(dir, 'ram');
    await writeFile(ramPath, Buffer.concat(atSource));
    const tracker = MemoryTracker.fromBase(await baseHashes(base), hash);
    const ram = await open(ramPath, 'r');
    try {
      assert.deepEqual(await seedTracker(tracker, ram, PAGES * BLOCK_SIZE, held), { held: 2, kept: 1 });
    } finally {
      await ram.close();
    }
    const pool: ScanPool = { threads: 1, changedPages: (task) => changedShare(task, hash, null) };
    const changed = await tracker.changedPagesOnPool(ramPath, pool);
    assert.deepEqual(changed, [5, 7], 'page 3 is held as it is; 5 holds other content; 7 only the base');
    for (const i of changed) tracker.sent(i, atSource[i]!);
    assert.equal(tracker.digest(), table(atSource).digest(), 'the stop digest is of the source as it is');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a resumed stream sends the disk blocks the target lacks, named or not', async () => {
  const block = (fill: number) => Buffer.alloc(BLOCK_SIZE, fill);
  const base = new Map([[1, blockHash(block(0x11))]]);
  // The target's overlay: block 1 rewritten, block 2 written with zeros (as the base), block 4.
  const targetOverlay = new Map<number, Buffer | null>([[1, blockHash(block(0x21))], [2, null], [4, blockHash(block(0x24))]]);
  const held = heldBlocks(targetOverlay, base);
  assert.deepEqual([...held.indices], [1, 4], 'an overlay block with the base content is not named');
  // The source: block 1 as the target holds it, 4 written again, 6 new, 9 named by nobody.
  const source = new Map([[1, block(0x21)], [4, block(0x34)], [6, block(0x36)]]);
  const read = async (i: number, into: Buffer) => {
    (source.get(i) ?? (i === 1 ? block(0x11) : block(0))).copy(into);
    return into;
  };
  assert.deepEqual(await blocksTargetLacks([1, 4, 6], held, base, read), { lacking: [4, 6], kept: 1 });
  // A block the target names but the source never wrote holds the base here: it goes again.
  const stray = heldBlocks(new Map([[9, blockHash(block(0x99))]]), base);
  assert.deepEqual(await blocksTargetLacks([], stray, base, read), { lacking: [9], kept: 0 });
});

test("a resumed attempt keeps, of what it last sent per chunk, only what the target holds: XORs stay against the target's copy", () => {
  const cache = new SentChunkCache(8);
  cache.put(Space.Memory, 3, page(0xa3)); // the target applied it
  cache.put(Space.Memory, 5, page(0xc5)); // sent, never applied: the target holds 0xa5
  cache.put(Space.Memory, 8, page(0xc8)); // sent, never applied: the target holds the base
  cache.put(Space.Memory, 9, page(9)); // sent as the base's own content
  cache.put(Space.Disk, 4, page(0x24));
  const held = {
    memory: heldPages(table(Array.from({ length: PAGES }, (_, i) => (i === 3 ? page(0xa3) : i === 5 ? page(0xa5) : page(i)))), table(Array.from({ length: PAGES }, (_, i) => page(i)))),
    disk: heldBlocks(new Map([[4, blockHash(page(0x24))]]), new Map()),
  };
  keepHeldSends(cache, held, { page: (i) => blockHash(page(i)), block: () => blockHash(page(0)) });
  assert.deepEqual(
    [[3, 5, 8, 9].map((i) => cache.get(Space.Memory, i) !== undefined), cache.get(Space.Disk, 4) !== undefined],
    [[true, false, false, true], true],
  );
});

test('what was last sent per chunk, kept in a file, is there for the next process: taken up as it is, checked by the holdings', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ehoff-test-sent-'));
  try {
    const path = join(dir, 'vm.sent');
    const first = SentChunkCache.inFile(path, 4);
    first.put(Space.Memory, 3, page(0xa3));
    first.put(Space.Memory, 5, page(0xc5));
    first.put(Space.Disk, 7, page(0x27));
    first.forget(Space.Memory, 5);
    first.close(); // the worker dies here
    const next = SentChunkCache.inFile(path, 4);
    assert.equal(next.size, 2);
    assert.deepEqual(next.get(Space.Memory, 3), page(0xa3));
    assert.deepEqual(next.get(Space.Disk, 7), page(0x27));
    assert.equal(next.get(Space.Memory, 5), undefined, 'a forgotten chunk stays forgotten');
    // Slots left free by the earlier process are used before anything is evicted.
    for (const i of [10, 11]) next.put(Space.Memory, i, page(i));
    assert.equal(next.size, 4);
    next.keepWhere((space) => space === Space.Memory);
    assert.equal(next.get(Space.Disk, 7), undefined);
    assert.equal(next.size, 3);
    next.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
