import { BLOCK_SIZE } from '../blocks.js';
import type { DiskBlocks } from './disk-blocks.js';

/**
 * Reads `blocks` from a disk and hands each to `visit` in their order, with READS_AT_ONCE reads
 * in flight. Its callers are on the stop's path (the end frame waits for them), where one read
 * after another waited on each and a guest that syncs its disk 20 times a second leaves thousands
 * of blocks to read; 64 keep the I/O pool busy without holding more than 256 KiB at once.
 */
export async function readBlocksInOrder(disk: Pick<DiskBlocks, 'readBlock'>, blocks: ArrayLike<number>, visit: (data: Buffer, k: number) => void): Promise<void> {
  for (let k = 0; k < blocks.length; k += READS_AT_ONCE) {
    const some = Array.from({ length: Math.min(READS_AT_ONCE, blocks.length - k) }, (_, j) => blocks[k + j]!);
    const read = await Promise.all(some.map((index) => disk.readBlock(index, Buffer.allocUnsafe(BLOCK_SIZE))));
    for (const [j, data] of read.entries()) visit(data, k + j);
  }
}

const READS_AT_ONCE = 64;
