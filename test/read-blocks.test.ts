import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { BLOCK_SIZE } from '../engine/blocks.js';
import { readBlocksInOrder } from '../engine/disk/read-blocks.js';
import { readStoppedDiskBlocks } from '../engine/postcopy/stopped-disk-blocks.js';

// The stop path's block reads: in flight together, handed on in the order asked for.

/** A disk whose block b holds the byte b, answering a batch's first reads last, counting reads in flight. */
function slowDisk() {
  const seen = { inFlight: 0, most: 0, reads: 0 };
  return {
    seen,
    async readBlock(index: number, into: Buffer = Buffer.alloc(BLOCK_SIZE)): Promise<Buffer> {
      seen.inFlight++; seen.reads++;
      seen.most = Math.max(seen.most, seen.inFlight);
      // The first reads of each 64 answer last.
      await sleep(64 - (seen.reads % 64));
      seen.inFlight--;
      return into.fill(index & 0xff);
    },
  };
}

test('blocks are read many at a time, at most 64, and visited in the order asked for', async () => {
  const disk = slowDisk();
  const blocks = Uint32Array.from({ length: 150 }, (_, k) => 3 * k + 1);
  const visited: Array<[number, number]> = [];
  await readBlocksInOrder(disk, blocks, (data, k) => visited.push([k, data[0]!]));
  assert.deepEqual(visited, Array.from(blocks, (b, k) => [k, b & 0xff]));
  assert.equal(disk.seen.reads, 150);
  assert.equal(disk.seen.most, 64);
});

test('the stopped disk blocks: each one hashed where it stands, an all-zeros block marked as such', async () => {
  const disk = slowDisk();
  const blocks = Uint32Array.from([0, 1, 2, 256, 300]);
  const stopped = await readStoppedDiskBlocks(disk, blocks, (d) => BigInt(d[0]!) + 1n);
  assert.deepEqual(Array.from(stopped.stopHashes), [1n, 2n, 3n, 1n, 45n]);
  assert.deepEqual(stopped.sha256.map((h) => h === null), [true, false, false, true, false]);
});
