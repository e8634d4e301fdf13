import { BLOCK_SIZE } from '../blocks.js';
import type { DiskBlocks } from '../disk/disk-blocks.js';
import type { CachedBaseImage } from '../image/image-cache.js';
import { digestFromBlockHashes, overlayHashes } from '../image/image-digest.js';

/** Digest of the disk a VM sees (base + overlay), computed from the base's block index. */
export async function diskDigest(base: CachedBaseImage, disk: DiskBlocks): Promise<string> {
  const blocks: Array<[number, Buffer]> = [];
  const buf = Buffer.alloc(BLOCK_SIZE);
  for (const index of await disk.dirtyBlocks()) blocks.push([index, Buffer.from(await disk.readBlock(index, buf))]);
  return digestFromBlockHashes(base.manifest.disk.sizeBytes, overlayHashes(await base.diskBlockHashes(), blocks));
}
