import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { BLOCK_SIZE } from '../engine/blocks.js';
import { CodecPool } from '../engine/pipeline/codec-pool.js';
import {
  decodeBlockHashes,
  digestFromBlockHashes,
  digestOfFile,
  encodeBlockHashes,
  overlayHashes,
  scanImage,
} from '../engine/image/image-digest.js';

async function withDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'ehoff-test-digest-'));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** An image with data, zero blocks and zero regions longer than the 4 MiB scan window. */
function sampleImage(): Buffer {
  const image = Buffer.alloc(12 << 20);
  randomBytes(3 * BLOCK_SIZE).copy(image, 5 * BLOCK_SIZE);
  randomBytes(BLOCK_SIZE).copy(image, (9 << 20) + BLOCK_SIZE);
  image.write('tail', image.length - 10);
  return image;
}

test('scanning a file and merging base + overlay give the same digest', async () => {
  await withDir(async (dir) => {
    const base = sampleImage();
    await writeFile(join(dir, 'base'), base);
    const baseScan = await scanImage(join(dir, 'base'));
    assert.equal(baseScan.hashes.size, 5, 'only non-zero blocks are indexed');

    // Overlay: change a data block, fill a zero block, zero a data block.
    const changed = Buffer.from(base);
    const overlay: Array<[number, Buffer]> = [
      [5, randomBytes(BLOCK_SIZE)],
      [100, Buffer.alloc(BLOCK_SIZE, 7)],
      [6, Buffer.alloc(BLOCK_SIZE)],
    ];
    for (const [i, b] of overlay) b.copy(changed, i * BLOCK_SIZE);
    await writeFile(join(dir, 'changed'), changed);

    const scanned = await scanImage(join(dir, 'changed'));
    const merged = overlayHashes(baseScan.hashes, overlay);
    assert.equal(digestFromBlockHashes(changed.length, merged), digestFromBlockHashes(scanned.sizeBytes, scanned.hashes));
    assert.equal(await digestOfFile(join(dir, 'changed')), digestFromBlockHashes(changed.length, merged), 'the streamed digest agrees');
    const pool = new CodecPool(3);
    try {
      assert.equal(await pool.digestFile(join(dir, 'changed'), changed.length), digestFromBlockHashes(changed.length, merged), 'the digest split over threads agrees');
    } finally {
      await pool.close();
    }
    assert.notEqual(digestFromBlockHashes(base.length, baseScan.hashes), digestFromBlockHashes(changed.length, merged));
  });
});

test('the digest covers the size and every byte', async () => {
  await withDir(async (dir) => {
    const a = sampleImage();
    const b = Buffer.from(a);
    b[5 * BLOCK_SIZE + 77]! ^= 1;
    await writeFile(join(dir, 'a'), a);
    await writeFile(join(dir, 'b'), b);
    const [sa, sb] = [await scanImage(join(dir, 'a')), await scanImage(join(dir, 'b'))];
    assert.notEqual(digestFromBlockHashes(sa.sizeBytes, sa.hashes), digestFromBlockHashes(sb.sizeBytes, sb.hashes));
    assert.notEqual(digestFromBlockHashes(sa.sizeBytes, sa.hashes), digestFromBlockHashes(sa.sizeBytes + BLOCK_SIZE, sa.hashes));
  });
});

test('block hash index round-trips and rejects what does not fit', () => {
  const hashes = new Map([[3, randomBytes(32)], [1, randomBytes(32)]]);
  const back = decodeBlockHashes(encodeBlockHashes(hashes), 16 * BLOCK_SIZE);
  assert.deepEqual([...back.entries()].sort(), [...hashes.entries()].sort());
  assert.throws(() => decodeBlockHashes(Buffer.alloc(41), 16 * BLOCK_SIZE), /not a multiple of 40/);
  assert.throws(() => decodeBlockHashes(encodeBlockHashes(new Map([[99, randomBytes(32)]])), 16 * BLOCK_SIZE), /past the image's 16 blocks/);
});
