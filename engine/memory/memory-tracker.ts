import type { FileHandle } from 'node:fs/promises';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { BLOCK_SIZE } from '../blocks.js';

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

  /** Records the bytes read for sending as what the target will hold for that page. */
  sent(index: number, data: Uint8Array): void {
    this.held[index] = this.hash(data);
  }

  private async scan(file: FileHandle, visit: (index: number, h: bigint) => void): Promise<void> {
    const buf = Buffer.alloc(SCAN_PAGES * BLOCK_SIZE);
    for (let first = 0; first < this.pages; first += SCAN_PAGES) {
      const n = Math.min(SCAN_PAGES, this.pages - first);
      const { bytesRead } = await file.read(buf, 0, n * BLOCK_SIZE, first * BLOCK_SIZE);
      if (bytesRead < n * BLOCK_SIZE) buf.fill(0, bytesRead, n * BLOCK_SIZE);
      for (let k = 0; k < n; k++) visit(first + k, this.hash(buf.subarray(k * BLOCK_SIZE, (k + 1) * BLOCK_SIZE)));
      await yieldToLoop();
    }
  }
}
