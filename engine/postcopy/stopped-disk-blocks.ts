import type { DiskBlocks } from '../disk/disk-blocks.js';
import { readBlocksInOrder } from '../disk/read-blocks.js';
import { HandoffError } from '../errors.js';
import { blockHash, isZeroBlock } from '../image/image-digest.js';
import { runPages } from './plan.js';

/**
 * The most disk blocks a post-copy leaves to fetch: their SHA-256s go in the end frame (32 bytes
 * each), so a stopped epoch with more sends the rest of its disk blocks before the resume, as
 * pre-copy does.
 */
export const MAX_POST_COPY_DISK_BLOCKS = 16_384;

/** The stopped state of the disk blocks a post-copy leaves stale (ascending): each one's xxHash64 and SHA-256 (null: all zeros). */
export interface StoppedDiskBlocks {
  blocks: Uint32Array;
  stopHashes: BigUint64Array;
  sha256: Array<Buffer | null>;
}

/**
 * Reads the stale blocks from the stopped VM's disk (which nothing writes while it is paused):
 * the xxHash64 goes with each block to the target and is checked there as a page's is; the
 * SHA-256 goes ahead in the end frame, so the target can check the disk it holds, stale blocks
 * counted as what they will be, before it runs the VM.
 */
export async function readStoppedDiskBlocks(disk: Pick<DiskBlocks, 'readBlock'>, blocks: Uint32Array, hash64: (d: Uint8Array) => bigint): Promise<StoppedDiskBlocks> {
  const stopHashes = new BigUint64Array(blocks.length);
  const sha256: Array<Buffer | null> = new Array(blocks.length).fill(null);
  await readBlocksInOrder(disk, blocks, (data, k) => {
    stopHashes[k] = hash64(data);
    sha256[k] = isZeroBlock(data) ? null : blockHash(data);
  });
  return { blocks, stopHashes, sha256 };
}

/** The stop hashes of a plan's chunks (chunksOf's order): the stale pages', then the stale disk blocks'. */
export function withDiskStopHashes(pages: BigUint64Array, disk: Pick<StoppedDiskBlocks, 'stopHashes'>): BigUint64Array {
  const all = new BigUint64Array(pages.length + disk.stopHashes.length);
  all.set(pages);
  all.set(disk.stopHashes, pages.length);
  return all;
}

/**
 * The end frame's stale disk blocks as the target uses them: the blocks (ascending, each inside
 * the disk) and each one's SHA-256 as stopped (null: all zeros).
 */
export function staleDiskOf(end: { runs: ReadonlyArray<readonly [number, number]>; sha256: string } | undefined, diskBlocks: number): { blocks: Uint32Array; sha256: Map<number, Buffer | null> } {
  if (!end) return { blocks: new Uint32Array(0), sha256: new Map() };
  const blocks = runPages(end.runs, MAX_POST_COPY_DISK_BLOCKS);
  const hashes = Buffer.from(end.sha256, 'base64');
  if (blocks.length * 32 !== hashes.length) throw new HandoffError('PROTOCOL', `the post-copy names ${blocks.length} stale disk blocks and gives ${hashes.length / 32} hashes`);
  for (const [k, b] of blocks.entries()) {
    if (b >= diskBlocks || (k > 0 && b <= blocks[k - 1]!)) throw new HandoffError('PROTOCOL', `the post-copy's stale disk blocks are not ascending blocks of the ${diskBlocks}-block disk`);
  }
  const zero = Buffer.alloc(32);
  return { blocks, sha256: new Map(Array.from(blocks, (b, k) => {
    const h = hashes.subarray(k * 32, (k + 1) * 32);
    return [b, h.equals(zero) ? null : Buffer.from(h)] as const;
  })) };
}

/** The end frame's form of the stale blocks' SHA-256s (see staleDiskOf). */
export function encodeStaleDiskHashes(sha256: ReadonlyArray<Buffer | null>): string {
  return Buffer.concat(sha256.map((h) => h ?? Buffer.alloc(32))).toString('base64');
}
