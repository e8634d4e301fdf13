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

test('post-copy: a read of a missing block waits for its fill, and asks for it; blocks present read at once', async () => {
  await withDisk(async (disk, base) => {
    const asked: number[] = [];
    disk.onDemand((i) => asked.push(i));
    disk.markMissing([3, 4]);
    assert.deepEqual(disk.missingBlocks(), [3, 4]);
    // Block 2 is present: read without waiting.
    const two = Buffer.alloc(BLOCK_SIZE);
    await disk.read(two, BLOCK_SIZE, 2 * BLOCK_SIZE);
    assert.deepEqual(two, base.subarray(2 * BLOCK_SIZE, 3 * BLOCK_SIZE));
    let done = false;
    const span = Buffer.alloc(3 * BLOCK_SIZE);
    const reading = disk.read(span, span.length, 2 * BLOCK_SIZE).then(() => (done = true));
    await new Promise((r) => setTimeout(r, 30));
    assert.equal(done, false, 'a read over missing blocks must wait');
    assert.deepEqual(asked.sort(), [3, 4]);
    const three = randomBytes(BLOCK_SIZE);
    const four = randomBytes(BLOCK_SIZE);
    assert.equal(await disk.fill(3, three), true);
    await new Promise((r) => setTimeout(r, 10));
    assert.equal(done, false, 'still waiting on block 4');
    assert.equal(await disk.fill(4, four), true);
    await reading;
    assert.deepEqual(span, Buffer.concat([base.subarray(2 * BLOCK_SIZE, 3 * BLOCK_SIZE), three, four]));
    assert.deepEqual(disk.missingBlocks(), []);
    assert.equal(disk.isDirty(3) && disk.isDirty(4), true);
  });
});

test("post-copy: a guest's whole-block write wins over the fetch; a partial write waits for the block and lands on it", async () => {
  await withDisk(async (disk) => {
    disk.markMissing([5, 6]);
    // Block 5 written whole by the guest: the fetched copy that comes later is dropped.
    const guest = randomBytes(BLOCK_SIZE);
    await disk.write(guest, BLOCK_SIZE, 5 * BLOCK_SIZE);
    assert.equal(await disk.fill(5, randomBytes(BLOCK_SIZE)), false);
    const five = Buffer.alloc(BLOCK_SIZE);
    await disk.read(five, BLOCK_SIZE, 5 * BLOCK_SIZE);
    assert.deepEqual(five, guest);
    // Block 6 written in part: the write waits for the fetched content, then lands on it.
    let wrote = false;
    const writing = disk.write(Buffer.from('edge'), 4, 6 * BLOCK_SIZE + 100).then(() => (wrote = true));
    await new Promise((r) => setTimeout(r, 30));
    assert.equal(wrote, false, 'a partial write over a missing block must wait');
    const fetched = randomBytes(BLOCK_SIZE);
    assert.equal(await disk.fill(6, fetched), true);
    await writing;
    const six = Buffer.alloc(BLOCK_SIZE);
    await disk.read(six, BLOCK_SIZE, 6 * BLOCK_SIZE);
    const expected = Buffer.from(fetched);
    expected.write('edge', 100);
    assert.deepEqual(six, expected);
  });
});

test('post-copy: a block past the disk cannot be marked missing, and a fill of the wrong size is refused', async () => {
  await withDisk(async (disk) => {
    assert.throws(() => disk.markMissing([SIZE / BLOCK_SIZE]), /past the/);
    disk.markMissing([1]);
    await assert.rejects(disk.fill(1, Buffer.alloc(100)), /100 bytes/);
    assert.deepEqual(disk.missingBlocks(), [1]);
  });
});

test('post-copy: the blocks waited on are known while they are waited on, and a read during a whole-block write of a missing block gets the write', async () => {
  await withDisk(async (disk) => {
    disk.markMissing([7, 8]);
    const seven = Buffer.alloc(BLOCK_SIZE);
    const reading = disk.read(seven, BLOCK_SIZE, 7 * BLOCK_SIZE);
    await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(disk.waitedOn(), [7]);
    const guest = randomBytes(BLOCK_SIZE);
    const writing = disk.write(guest, BLOCK_SIZE, 7 * BLOCK_SIZE);
    // A fill racing the guest's whole-block write is dropped once the write lands.
    assert.equal(await disk.fill(7, randomBytes(BLOCK_SIZE)), false);
    await writing;
    await reading;
    assert.deepEqual(seven, guest);
    assert.deepEqual(disk.waitedOn(), []);
    assert.deepEqual(disk.missingBlocks(), [8]);
  });
});
