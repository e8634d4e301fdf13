import type { DiskBlocks } from '../disk/disk-blocks.js';
import { readBlocksInOrder } from '../disk/read-blocks.js';
import type { CachedBaseImage } from '../image/image-cache.js';
import { digestFromBlockHashes, overlayHashes } from '../image/image-digest.js';

/**
 * Digest of the disk a VM sees (base + overlay), computed from the base's block index: it reads
 * every block the guest wrote since it started.
 */
export async function diskDigest(base: CachedBaseImage, disk: DiskBlocks): Promise<string> {
  const dirty = await disk.dirtyBlocks();
  const blocks: Array<[number, Buffer]> = [];
  await readBlocksInOrder(disk, dirty, (data, k) => blocks.push([dirty[k]!, data]));
  return digestFromBlockHashes(base.manifest.disk.sizeBytes, overlayHashes(await base.diskBlockHashes(), blocks));
}
