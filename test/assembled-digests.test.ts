import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { BLOCK_SIZE } from '../engine/blocks.js';
import { CodecPool } from '../engine/pipeline/codec-pool.js';
import { digestFromBlockHashes, digestOfFile, scanImage } from '../engine/image/image-digest.js';
import type { CachedBaseImage } from '../engine/image/image-cache.js';
import { DiskOverlay } from '../engine/disk/disk-overlay.js';
import { diskDigest } from '../engine/handoff/state-digest.js';
import { AssembledDiskDigest } from '../engine/handoff/assembled-disk-digest.js';
import { PageHashTable } from '../engine/memory/page-hash-table.js';
import { AssembledMemoryDigest } from '../engine/handoff/assembled-memory-digest.js';

const PAGES = 4096; // 16 MiB: several shares and read runs, zero regions and data

async function withFile<T>(fn: (path: string, pool: CodecPool) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'ehoff-test-ramdigest-'));
  const pool = new CodecPool(2);
  try {
    const image = Buffer.alloc(PAGES * BLOCK_SIZE);
    randomBytes(300 * BLOCK_SIZE).copy(image, 10 * BLOCK_SIZE);
    randomBytes(BLOCK_SIZE).copy(image, (PAGES - 1) * BLOCK_SIZE);
    const path = join(dir, 'ram');
    await writeFile(path, image);
    return await fn(path, pool);
  } finally {
    await pool.close();
    await rm(dir, { recursive: true, force: true });
  }
}

test('the page table folds to the same digest as scanning the file', async () => {
  await withFile(async (path) => {
    const table = new PageHashTable(PAGES);
    const file = await open(path, 'r');
    const page = Buffer.alloc(BLOCK_SIZE);
    for (let i = 0; i < PAGES; i++) {
      await file.read(page, 0, BLOCK_SIZE, i * BLOCK_SIZE);
      table.setPage(i, page);
    }
    await file.close();
    assert.equal(table.digest(), await digestOfFile(path));
  });
});

test('the assembled digest follows writes made while it hashes, and equals a full read', async () => {
  await withFile(async (path, pool) => {
    const digest = new AssembledMemoryDigest(path, PAGES, pool);
    digest.start();
    const file = await open(path, 'r+');
    try {
      // Writes race the full pass and the rounds after it: runs, single pages, zeroing a page.
      for (let k = 0; k < 40; k++) {
        const first = (k * 97) % (PAGES - 8);
        const count = 1 + (k % 8);
        const data = k % 5 === 0 ? Buffer.alloc(count * BLOCK_SIZE) : randomBytes(count * BLOCK_SIZE);
        await file.writev([data], first * BLOCK_SIZE);
        digest.written(first, count);
        if (k % 10 === 0) await new Promise((r) => setTimeout(r, 30));
      }
      assert.equal(await digest.settle(), await digestOfFile(path));

      // A write that bypasses `written` is not seen until the whole file is read again: why
      // the target checks the file's modification time before it trusts the digest.
      const before = await digest.settle();
      await file.write(Buffer.from('not through the write path'), 0, 26, 20 * BLOCK_SIZE + 5);
      assert.equal(await digest.settle(), before);
      await digest.rehashAll();
      const after = await digest.settle();
      assert.notEqual(after, before);
      assert.equal(after, await digestOfFile(path));
    } finally {
      await file.close();
      digest.close();
    }
    await assert.rejects(() => {
      digest.written(0, 1);
      return digest.settle();
    }, /closed with work pending/);
  });
});

test('the assembled disk digest follows overlay writes and equals base + overlay read at the end', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ehoff-test-diskdigest-'));
  try {
    const baseBytes = Buffer.alloc(2048 * BLOCK_SIZE);
    randomBytes(100 * BLOCK_SIZE).copy(baseBytes, 50 * BLOCK_SIZE);
    await writeFile(join(dir, 'base'), baseBytes);
    const scanned = await scanImage(join(dir, 'base'));
    const base = { manifest: { disk: { sizeBytes: baseBytes.length } }, diskBlockHashes: async () => scanned.hashes } as unknown as CachedBaseImage;
    const disk = await DiskOverlay.open(join(dir, 'base'), join(dir, 'overlay'), baseBytes.length);
    const digest = new AssembledDiskDigest(base, disk);
    try {
      for (let k = 0; k < 30; k++) {
        const index = (k * 37) % 2048;
        await disk.writeBlock(index, k % 4 === 0 ? Buffer.alloc(BLOCK_SIZE) : randomBytes(BLOCK_SIZE));
        digest.written(index);
        if (k % 10 === 0) await new Promise((r) => setTimeout(r, 120));
      }
      const kept = await digest.settle();
      assert.equal(kept, await diskDigest(base, disk));
      assert.notEqual(kept, digestFromBlockHashes(baseBytes.length, scanned.hashes), 'the overlay changed the disk');
      // A write the digest was not told of: the overlay's write count moves, and a re-read sees it.
      const writes = disk.writeCount;
      await disk.write(Buffer.from('written through the FUSE side'), 29, 60 * BLOCK_SIZE + 9);
      assert.notEqual(disk.writeCount, writes);
      await digest.rehashAll();
      assert.equal(await digest.settle(), await diskDigest(base, disk));
    } finally {
      digest.close();
      await disk.close();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
