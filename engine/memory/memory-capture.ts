import { open } from 'node:fs/promises';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { BLOCK_SIZE } from '../blocks.js';
import { ImageDigest, blockHash, isZeroBlock } from '../image/image-digest.js';

const SCAN_BYTES = 4 << 20;

export interface MemoryCapture {
  /** Pages of the RAM file that differ from the base memory snapshot, ascending. */
  changedPages: number[];
  /** Canonical digest of the whole RAM file as it is now. */
  digest: string;
  sizeBytes: number;
}

/**
 * Compares a paused VM's RAM file with its base memory snapshot, page by page, and digests the
 * RAM in the same pass. The VM must be paused: a running guest would change pages under the scan.
 */
export async function captureMemory(ramPath: string, basePath: string, sizeBytes: number): Promise<MemoryCapture> {
  const [ram, base] = await Promise.all([open(ramPath, 'r'), open(basePath, 'r')]);
  try {
    const changedPages: number[] = [];
    const digest = new ImageDigest(sizeBytes);
    const now = Buffer.alloc(SCAN_BYTES);
    const was = Buffer.alloc(SCAN_BYTES);
    for (let pos = 0; pos < sizeBytes; pos += SCAN_BYTES) {
      const want = Math.min(SCAN_BYTES, sizeBytes - pos);
      const [a, b] = await Promise.all([ram.read(now, 0, want, pos), base.read(was, 0, want, pos)]);
      if (a.bytesRead !== want || b.bytesRead !== want) {
        throw new Error(`short read at ${pos}: RAM file or base memory is smaller than ${sizeBytes} bytes`);
      }
      for (let off = 0; off < want; off += BLOCK_SIZE) {
        const page = now.subarray(off, off + BLOCK_SIZE);
        const index = (pos + off) / BLOCK_SIZE;
        if (!page.equals(was.subarray(off, off + BLOCK_SIZE))) changedPages.push(index);
        if (!isZeroBlock(page)) digest.add(index, blockHash(page));
      }
      await yieldToLoop();
    }
    return { changedPages, digest: digest.hex(), sizeBytes };
  } finally {
    await Promise.allSettled([ram.close(), base.close()]);
  }
}
