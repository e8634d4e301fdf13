import { open } from 'node:fs/promises';
import { BLOCK_SIZE } from '../blocks.js';
import { ImageDigest, blockHash, isZeroBlock } from '../image/image-digest.js';
import { SCAN_PAGES, scanPages } from './scan-pages.js';

const RECORD_BYTES = 40;
export const ZERO_PAGE_SHA = blockHash(Buffer.alloc(BLOCK_SIZE));

/**
 * The SHA-256 of every page of a memory image, laid out as the canonical image digest's
 * (index, hash) records in index order, with a flag for the all-zero pages the digest leaves
 * out. Folding it into the digest is a few large hash updates instead of one per page: it sits
 * on the stopped VM's path at both ends of a handoff. Backed by shared memory so that pool
 * threads can hash pages straight into it.
 */
export class PageHashTable {
  readonly records: Buffer;
  readonly zero: Uint8Array;

  constructor(readonly pages: number, shared?: { records: SharedArrayBuffer; zero: SharedArrayBuffer }) {
    this.records = Buffer.from(shared?.records ?? new SharedArrayBuffer(pages * RECORD_BYTES));
    this.zero = new Uint8Array(shared?.zero ?? new SharedArrayBuffer(pages));
    if (!shared) for (let i = 0; i < pages; i++) this.records.writeBigUInt64LE(BigInt(i), i * RECORD_BYTES);
  }

  /** The buffers to hand to a pool thread (see `hashPageRuns`). */
  get shared(): { records: SharedArrayBuffer; zero: SharedArrayBuffer } {
    return { records: this.records.buffer as SharedArrayBuffer, zero: this.zero.buffer as SharedArrayBuffer };
  }

  set(index: number, sha: Uint8Array): void {
    this.records.set(sha, index * RECORD_BYTES + 8);
    this.zero[index] = ZERO_PAGE_SHA.equals(sha) ? 1 : 0;
  }

  /** Records a page's content: its hash, or the zero flag (zero pages are not hashed). */
  setPage(index: number, page: Buffer): void {
    if (isZeroBlock(page)) {
      ZERO_PAGE_SHA.copy(this.records, index * RECORD_BYTES + 8);
      this.zero[index] = 1;
    } else {
      blockHash(page).copy(this.records, index * RECORD_BYTES + 8);
      this.zero[index] = 0;
    }
  }

  sha(index: number): Buffer {
    return this.records.subarray(index * RECORD_BYTES + 8, (index + 1) * RECORD_BYTES);
  }

  copyFrom(other: PageHashTable): void {
    this.records.set(other.records);
    this.zero.set(other.zero);
  }

  /** The canonical image digest of the memory these hashes describe. */
  digest(): string {
    const d = new ImageDigest(this.pages * BLOCK_SIZE);
    let start = -1;
    for (let i = 0; i <= this.pages; i++) {
      const nonZero = i < this.pages && this.zero[i] === 0;
      if (nonZero && start < 0) start = i;
      else if (!nonZero && start >= 0) {
        d.addRun(this.records.subarray(start * RECORD_BYTES, i * RECORD_BYTES));
        start = -1;
      }
    }
    return d.hex();
  }
}

/** Work for a pool thread: hash the pages of `runs` (pairs of first page, count) into the table. */
export interface PageRunsTask {
  path: string;
  pages: number;
  table: { records: SharedArrayBuffer; zero: SharedArrayBuffer };
  runs: Uint32Array;
  /** Where each page's xxHash64 goes too (a BigUint64Array over every page), when given. */
  xxh64?: SharedArrayBuffer;
}

/** Runs on a pool thread: reads each run from the file and records its pages' hashes (`hash64`: the xxHash64, for `task.xxh64`). */
export async function hashPageRuns(task: PageRunsTask, hash64?: (d: Uint8Array) => bigint): Promise<number> {
  const table = new PageHashTable(task.pages, task.table);
  const xxh = task.xxh64 && hash64 ? new BigUint64Array(task.xxh64) : undefined;
  const file = await open(task.path, 'r');
  const buf = Buffer.alloc(SCAN_PAGES * BLOCK_SIZE);
  let hashed = 0;
  try {
    for (let r = 0; r + 1 < task.runs.length; r += 2) {
      const first = task.runs[r]!;
      const count = task.runs[r + 1]!;
      await scanPages(file, first, first + count, (index, page) => (table.setPage(index, page), xxh && (xxh[index] = hash64!(page))), buf);
      hashed += count;
    }
  } finally {
    await file.close();
  }
  return hashed;
}
