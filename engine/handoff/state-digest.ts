import { BLOCK_SIZE } from '../blocks.js';
import type { DiskBlocks } from '../disk/disk-blocks.js';
import type { CachedBaseImage } from '../image/image-cache.js';
import { digestFromBlockHashes, overlayHashes } from '../image/image-digest.js';

/**
 * Digest of the disk a VM sees (base + overlay), computed from the base's block index. It is on
 * the stop's path (the end frame waits for it) and reads every block the guest wrote since it
 * started: READS_AT_ONCE reads in flight keep the I/O pool busy, where one read after another
 * waited on each — a guest that syncs its disk 20 times a second has thousands of such blocks.
 */
export async function diskDigest(base: CachedBaseImage, disk: DiskBlocks): Promise<string> {
  const dirty = await disk.dirtyBlocks();
  const blocks: Array<[number, Buffer]> = [];
  for (let k = 0; k < dirty.length; k += READS_AT_ONCE) {
    const some = dirty.slice(k, k + READS_AT_ONCE);
    const read = await Promise.all(some.map((index) => disk.readBlock(index, Buffer.allocUnsafe(BLOCK_SIZE))));
    for (const [j, index] of some.entries()) blocks.push([index, read[j]!]);
  }
  return digestFromBlockHashes(base.manifest.disk.sizeBytes, overlayHashes(await base.diskBlockHashes(), blocks));
}

const READS_AT_ONCE = 64;
