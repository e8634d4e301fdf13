import { open, type FileHandle } from 'node:fs/promises';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { BLOCK_SIZE } from '../blocks.js';
import { ImageDigest, blockHash } from '../image/image-digest.js';

const SCAN_PAGES = 1024;
const SHA_BYTES = 32;
const ZERO_PAGE_SHA = blockHash(Buffer.alloc(BLOCK_SIZE));

/** One thread's share of a changed-pages scan: pages [from, to) of the file against `held`. */
export interface ChangedShareTask {
  path: string;
  held: SharedArrayBuffer;
  from: number;
  to: number;
}

/** Runs on a pool thread: the pages in the share whose 64-bit hash differs from `held`. */
export async function changedShare(task: ChangedShareTask, hash: (d: Uint8Array) => bigint): Promise<Uint32Array> {
  const held = new BigUint64Array(task.held);
  const file = await open(task.path, 'r');
  const changed: number[] = [];
  try {
    const buf = Buffer.alloc(SCAN_PAGES * BLOCK_SIZE);
    for (let first = task.from; first < task.to; first += SCAN_PAGES) {
      const n = Math.min(SCAN_PAGES, task.to - first);
      const { bytesRead } = await file.read(buf, 0, n * BLOCK_SIZE, first * BLOCK_SIZE);
      if (bytesRead < n * BLOCK_SIZE) buf.fill(0, bytesRead, n * BLOCK_SIZE);
      for (let k = 0; k < n; k++) {
        if (held[first + k] !== hash(buf.subarray(k * BLOCK_SIZE, (k + 1) * BLOCK_SIZE))) changed.push(first + k);
      }
    }
  } finally {
    await file.close();
  }
  return Uint32Array.from(changed);
}

/**
 * Which pages of a running VM's RAM file the target does not hold yet. For every page it keeps
 * the 64-bit hash of the content the target has: the base page at first, then whatever was last
 * read for sending. A pre-copy epoch resends the pages whose current hash differs. Hashes are
 * only a change detector here; the final digests at the target prove the result.
 */
export class MemoryTracker {
  /** Shared, so that pool threads can compare against it without a copy. */
  private readonly held: BigUint64Array;
  /** SHA-256 of the same content, page by page: the stop-time digest folds these. */
  private readonly sha: Buffer;

  private constructor(
    readonly pages: number,
    private readonly hash: (d: Uint8Array) => bigint,
  ) {
    this.held = new BigUint64Array(new SharedArrayBuffer(pages * 8));
    this.sha = Buffer.alloc(pages * SHA_BYTES);
    for (let i = 0; i < pages; i++) ZERO_PAGE_SHA.copy(this.sha, i * SHA_BYTES);
  }

  /**
   * `changedPages` split over the pool's threads: on the stop's path (the guest is paused) and
   * between live epochs, one thread hashing a whole guest's RAM is the slowest step there is.
   */
  async changedPagesOnPool(ramPath: string, pool: { changedPages(task: ChangedShareTask): Promise<Uint32Array>; threads: number }): Promise<number[]> {
    const share = Math.ceil(this.pages / pool.threads / SCAN_PAGES) * SCAN_PAGES;
    const parts: Array<Promise<Uint32Array>> = [];
    for (let from = 0; from < this.pages; from += share) {
      parts.push(pool.changedPages({ path: ramPath, held: this.held.buffer as SharedArrayBuffer, from, to: Math.min(this.pages, from + share) }));
    }
    const changed: number[] = [];
    for (const part of await Promise.all(parts)) for (const i of part) changed.push(i);
    return changed;
  }

  /**
   * Starts from the base memory snapshot: what every cloudlet holds before anything is sent.
   * `baseBlockHashes`: the base's (index, SHA-256) records of non-zero pages, in order.
   */
  static async fromBase(base: FileHandle, sizeBytes: number, hash: (d: Uint8Array) => bigint, baseBlockHashes: Uint8Array[]): Promise<MemoryTracker> {
    const t = new MemoryTracker(sizeBytes / BLOCK_SIZE, hash);
    await t.scan(base, (index, h) => (t.held[index] = h));
    for (const r of baseBlockHashes) {
      const b = Buffer.from(r.buffer, r.byteOffset, r.byteLength);
      for (let off = 0; off < b.length; off += 40) b.copy(t.sha, Number(b.readBigUInt64LE(off)) * SHA_BYTES, off + 8, off + 40);
    }
    return t;
  }

  /**
   * The canonical memory digest of what the target must hold: every page as last read for
   * sending, or as in the base. Taken after the final epoch of a paused VM, it is the stop-time
   * digest without a second pass over the RAM: the final scan found every page whose bytes differ
   * from those last read (64-bit hash), and the final epoch read those again, paused. The target
   * digests its assembled file from its real bytes and must match.
   */
  digest(): string {
    const d = new ImageDigest(this.pages * BLOCK_SIZE);
    for (let i = 0; i < this.pages; i++) {
      const h = this.sha.subarray(i * SHA_BYTES, (i + 1) * SHA_BYTES);
      if (!h.equals(ZERO_PAGE_SHA)) d.add(i, h);
    }
    return d.hex();
  }

  /** Records the bytes read for sending as what the target will hold for that page. */
  sent(index: number, data: Uint8Array): void {
    this.held[index] = this.hash(data);
    blockHash(Buffer.from(data.buffer, data.byteOffset, data.byteLength)).copy(this.sha, index * SHA_BYTES);
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
