import type { FileHandle } from 'node:fs/promises';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { BLOCK_SIZE } from '../blocks.js';
import { ImageDigest, blockHash, isZeroBlock } from '../image/image-digest.js';

const SCAN_PAGES = 1024;

/**
 * Which pages of a running VM's RAM file the target does not hold yet. For every page it keeps
 * the 64-bit hash of the content the target has: the base page at first, then whatever was last
 * read for sending. A pre-copy epoch resends the pages whose current hash differs. Hashes are
 * only a change detector here; the final digests at the target prove the result.
 */
export class MemoryTracker {
  private readonly held: BigUint64Array;

  private constructor(
    readonly pages: number,
    private readonly hash: (d: Uint8Array) => bigint,
  ) {
    this.held = new BigUint64Array(pages);
  }

  /** Starts from the base memory snapshot: what every cloudlet holds before anything is sent. */
  static async fromBase(base: FileHandle, sizeBytes: number, hash: (d: Uint8Array) => bigint): Promise<MemoryTracker> {
    const t = new MemoryTracker(sizeBytes / BLOCK_SIZE, hash);
    await t.scan(base, (index, h) => (t.held[index] = h));
    return t;
  }

  /** Pages whose content now differs from what the target holds, ascending. */
  async changedPages(ram: FileHandle): Promise<number[]> {
    const changed: number[] = [];
    await this.scan(ram, (index, h) => {
      if (this.held[index] !== h) changed.push(index);
    });
    return changed;
  }

  /**
   * The same, plus the canonical digest of the RAM as read in this one pass: at the stop the VM
   * is paused, so this is its memory's digest at stop time, from the real bytes.
   */
  async changedPagesAndDigest(ram: FileHandle): Promise<{ changed: number[]; digest: string }> {
    const changed: number[] = [];
    const digest = new ImageDigest(this.pages * BLOCK_SIZE);
    await this.scan(ram, (index, h, page) => {
      if (this.held[index] !== h) changed.push(index);
      if (!isZeroBlock(page)) digest.add(index, blockHash(page));
    });
    return { changed, digest: digest.hex() };
  }

  /** Records the bytes read for sending as what the target will hold for that page. */
  sent(index: number, data: Uint8Array): void {
    this.held[index] = this.hash(data);
  }

  private async scan(file: FileHandle, visit: (index: number, h: bigint, page: Buffer) => void): Promise<void> {
    const buf = Buffer.alloc(SCAN_PAGES * BLOCK_SIZE);
    for (let first = 0; first < this.pages; first += SCAN_PAGES) {
      const n = Math.min(SCAN_PAGES, this.pages - first);
      const { bytesRead } = await file.read(buf, 0, n * BLOCK_SIZE, first * BLOCK_SIZE);
      if (bytesRead < n * BLOCK_SIZE) buf.fill(0, bytesRead, n * BLOCK_SIZE);
      for (let k = 0; k < n; k++) {
        const page = buf.subarray(k * BLOCK_SIZE, (k + 1) * BLOCK_SIZE);
        visit(first + k, this.hash(page), page);
      }
      await yieldToLoop();
    }
  }
}
