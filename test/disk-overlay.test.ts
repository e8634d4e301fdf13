import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { BLOCK_SIZE } from '../engine/blocks.js';
import { DiskOverlay } from '../engine/disk/disk-overlay.js';

const SIZE = 64 * BLOCK_SIZE;

async function withDisk(fn: (disk: DiskOverlay, base: Buffer, dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'ehoff-test-overlay-'));
  const base = randomBytes(SIZE);
  await writeFile(join(dir, 'base'), base);
  const disk = await DiskOverlay.open(join(dir, 'base'), join(dir, 'overlay'), SIZE);
  try {
    await fn(disk, base, dir);
  } finally {
    await disk.close();
    await rm(dir, { recursive: true, force: true });
  }
}

async function readAll(disk: DiskOverlay): Promise<Buffer> {
  const out = Buffer.alloc(SIZE);
  await disk.read(out, SIZE, 0);
  return out;
}

test('an untouched overlay reads as its base', async () => {
  await withDisk(async (disk, base) => {
    assert.deepEqual(await readAll(disk), base);
    assert.equal(disk.dirtyCount, 0);
  });
});

test('writes land in the overlay, mark exactly the blocks they touch, and keep the base intact', async () => {
  await withDisk(async (disk, base, dir) => {
    const expected = Buffer.from(base);
    // Unaligned write across blocks 2..4: blocks 2 and 4 are partial and need their base bytes.
    const data = randomBytes(2 * BLOCK_SIZE + 100);
    const at = 2 * BLOCK_SIZE + 1000;
    await disk.write(data, data.length, at);
    data.copy(expected, at);
    // Aligned whole-block write.
    const whole = randomBytes(BLOCK_SIZE);
    await disk.write(whole, BLOCK_SIZE, 10 * BLOCK_SIZE);
    whole.copy(expected, 10 * BLOCK_SIZE);

    assert.deepEqual(disk.dirtyBlocks(), [2, 3, 4, 10]);
    assert.deepEqual(await readAll(disk), expected);
    assert.deepEqual(await readFile(join(dir, 'base')), base, 'the base is never written');
  });
});

test('reads spanning clean and dirty blocks stitch both sources', async () => {
  await withDisk(async (disk, base) => {
    const block = Buffer.alloc(BLOCK_SIZE, 0xab);
    await disk.writeBlock(5, block);
    const out = Buffer.alloc(3 * BLOCK_SIZE);
    await disk.read(out, out.length, 4 * BLOCK_SIZE + 10);
    const expected = Buffer.from(base.subarray(4 * BLOCK_SIZE + 10, 7 * BLOCK_SIZE + 10));
    block.copy(expected, BLOCK_SIZE - 10);
    assert.deepEqual(out, expected);
  });
});

test('a write past the end of the disk is refused', async () => {
  await withDisk(async (disk) => {
    await assert.rejects(disk.write(Buffer.alloc(10), 10, SIZE - 5), /past end of disk/);
  });
});
