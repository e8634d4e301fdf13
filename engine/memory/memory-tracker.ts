import { open, type FileHandle } from 'node:fs/promises';
import { BLOCK_SIZE } from '../blocks.js';
import type { DirtyLog } from './dirty-log.js';
import { PageHashTable, ZERO_PAGE_SHA, type PageRunsTask } from './page-hash-table.js';
import { nativePageScan } from './native-page-scan.js';
import { SCAN_PAGES, scanPages } from './scan-pages.js';

/** Per page of a base memory snapshot: its 64-bit hash and its SHA-256. */
export interface BasePageHashes {
  held: BigUint64Array;
  sha: PageHashTable;
}

/** Where a changed-pages scan runs (the codec pool). */
export interface ScanPool {
  changedPages(task: ChangedShareTask): Promise<Uint32Array>;
  threads: number;
}

/**
 * One thread's share of a changed-pages scan: pages [from, to) of the file against `held`, or
 * only those of them listed in `among` (ascending: what a dirty log reported).
 */
export interface ChangedShareTask {
  path: string;
  held: SharedArrayBuffer;
  from: number;
  to: number;
  among?: Uint32Array;
}

/** Where pages are hashed into a shared table (the codec pool). */
export interface PageHashPool {
  hashPages(task: PageRunsTask): Promise<number>;
  threads: number;
}

/** Pages a dirty log reported, per share of a scan: below this many, a share is not worth a thread. */
const MIN_LISTED_SHARE = 256;

/**
 * Runs on a pool thread: the pages in the share whose 64-bit hash differs from `held`. In C
 * where the native scanner loads (one copy, native xxHash64), else read here and hashed in wasm.
 */
export async function changedShare(task: ChangedShareTask, hash: (d: Uint8Array) => bigint, native = nativePageScan()): Promise<Uint32Array> {
  const held = new BigUint64Array(task.held);
  if (native) return task.among ? native.changedAmong(task.path, held, task.among) : native.changedPages(task.path, held, task.from, task.to);
  const file = await open(task.path, 'r');
  const changed: number[] = [];
  try {
    const visit = (index: number, page: Buffer) => {
      if (held[index] !== hash(page)) changed.push(index);
    };
    if (task.among) {
      const buf = Buffer.alloc(SCAN_PAGES * BLOCK_SIZE);
      for (const run of consecutiveRuns(task.among)) await scanPages(file, run.from, run.to, visit, buf);
    } else {
      await scanPages(file, task.from, task.to, visit);
    }
  } finally {
    await file.close();
  }
  return Uint32Array.from(changed);
}

/**
 * Which pages of a running VM's RAM file the target does not hold yet. For every page it keeps
 * the 64-bit hash of the content the target has — the base page at first, then whatever was last
 * read for sending — and a pre-copy epoch resends the pages whose current hash differs. It keeps
 * the SHA-256 of the same content too, from which the stop-time memory digest is folded.
 *
 * With a dirty log, a scan after the first hashes only the pages the log reports written since
 * the last scan, plus those a scan found differing that were not read for sending since (the
 * log will not report them again): every page that can differ from what the target holds.
 */
export class MemoryTracker {
  /** Shared, so that pool threads can compare against it without a copy. */
  private readonly held: BigUint64Array;
  /** SHA-256 of the same content, page by page: the stop-time digest folds these. */
  private readonly sha: PageHashTable;
  /** The kernel's record of written pages, once attached. */
  private log: DirtyLog | null = null;
  /** Whether a scan of every page has finished since the log was attached: the log knows nothing from before. */
  private wholeScanned = false;
  /** With a log: pages a scan found differing that were not read for sending since. */
  private readonly unsent = new Set<number>();
  /** Why the log failed, if it did: every scan since has read the whole file. */
  private logFailure: string | null = null;

  private constructor(
    readonly pages: number,
    private readonly hash: (d: Uint8Array) => bigint,
    start: BasePageHashes,
  ) {
    this.held = new BigUint64Array(new SharedArrayBuffer(pages * 8));
    this.held.set(start.held);
    this.sha = new PageHashTable(pages);
    this.sha.copyFrom(start.sha);
  }

  /**
   * Scans after the next whole one look only where `log` says the guest wrote: attached at any
   * point, the next scan reads every page, which finds whatever was written before the log was
   * armed.
   */
  useDirtyLog(log: DirtyLog): void {
    this.log = log;
    this.wholeScanned = false;
  }

  /**
   * `changedPages` split over the pool's threads: on the stop's path (the guest is paused) and
   * between live epochs, one thread hashing a whole guest's RAM is the slowest step there is.
   */
  async changedPagesOnPool(ramPath: string, pool: ScanPool): Promise<number[]> {
    const changed: number[] = [];
    for await (const part of this.changedPagesByShare(ramPath, pool, 1)) for (const i of part) changed.push(i);
    return changed;
  }

  /**
   * The same scan in `sharesPerThread` × threads shares, in file order, one share per thread in
   * flight: a caller can send what the first shares found while the rest is scanned, and its
   * encoding tasks queue on the pool between shares rather than behind all of them. Marking
   * pages sent meanwhile is safe: shares cover disjoint pages.
   */
  async *changedPagesByShare(ramPath: string, pool: ScanPool, sharesPerThread: number): AsyncGenerator<Uint32Array> {
    const held = this.held.buffer as SharedArrayBuffer;
    const listed = this.log && this.wholeScanned && this.logFailure === null ? this.takeCandidates() : null;
    this.unsent.clear();
    const tasks = listed ? listedShares(listed, pool.threads * sharesPerThread) : wholeShares(this.pages, pool.threads * sharesPerThread);
    let next = 0;
    let finished = false;
    const dispatch = () => {
      const part = pool.changedPages({ path: ramPath, held, ...tasks[next++]! });
      part.catch(() => undefined);
      return part;
    };
    try {
      const inFlight: Array<Promise<Uint32Array>> = [];
      while (next < tasks.length && inFlight.length < pool.threads) inFlight.push(dispatch());
      while (inFlight.length > 0) {
        const part = await inFlight.shift()!;
        if (next < tasks.length) inFlight.push(dispatch());
        // Before the caller reads them for sending (sent() then drops them again).
        if (this.log) for (const i of part) this.unsent.add(i);
        yield part;
      }
      finished = true;
      if (this.log) this.wholeScanned = true;
    } finally {
      // A scan left part-way: what the log reported must not be forgotten with it.
      if (!finished && listed) for (const i of listed) this.unsent.add(i);
    }
  }

  /** Why the dirty log failed, if it did (every scan since read the whole file); null if it did not. */
  get dirtyLogFailure(): string | null {
    return this.logFailure;
  }

  /**
   * What the log reports written, with the pages still unsent, ascending; null once the log
   * failed — a PAGEMAP_SCAN that fails part-way may have re-protected pages it did not report,
   * so from then on only a whole scan knows.
   */
  private takeCandidates(): Uint32Array | null {
    let written: Uint32Array;
    try {
      written = this.log!.collect();
    } catch (err) {
      this.logFailure = (err as Error).message;
      return null;
    }
    // Ascending: the last is the highest. A page past the file is a log that cannot be trusted.
    const highest = written.at(-1);
    if (highest !== undefined && highest >= this.pages) {
      this.logFailure = `the dirty log reported page ${highest}, past the RAM file's ${this.pages} pages`;
      return null;
    }
    if (this.unsent.size === 0) return written;
    const all = new Set(this.unsent);
    for (const i of written) all.add(i);
    return Uint32Array.from(all).sort();
  }

  /**
   * Both hashes of every page of a base memory snapshot: what every cloudlet holds before
   * anything is sent. A cloudlet computes them once per base and starts each handoff from them.
   * `baseBlockHashes`: the base's (index, SHA-256) records of non-zero pages, in order.
   */
  static async hashBase(base: FileHandle, sizeBytes: number, hash: (d: Uint8Array) => bigint, baseBlockHashes: Uint8Array[]): Promise<BasePageHashes> {
    const pages = sizeBytes / BLOCK_SIZE;
    const held = new BigUint64Array(pages);
    await scanPages(base, 0, pages, (index, page) => (held[index] = hash(page)));
    const sha = new PageHashTable(pages);
    for (let i = 0; i < pages; i++) sha.set(i, ZERO_PAGE_SHA);
    for (const r of baseBlockHashes) {
      const b = Buffer.from(r.buffer, r.byteOffset, r.byteLength);
      for (let off = 0; off < b.length; off += 40) sha.set(Number(b.readBigUInt64LE(off)), b.subarray(off + 8, off + 40));
    }
    return { held, sha };
  }

  /** A tracker for one handoff, starting from the base (its arrays are copied, not shared). */
  static fromBase(start: BasePageHashes, hash: (d: Uint8Array) => bigint): MemoryTracker {
    return new MemoryTracker(start.held.length, hash, start);
  }

  /**
   * The canonical memory digest of what the target must hold: every page as last read for
   * sending, or as in the base. Taken after the final epoch of a paused VM, it is the stop-time
   * digest without a second pass over the RAM: the final scan found every page whose bytes differ
   * from those last read (64-bit hash), and the final epoch read those again, paused. The target
   * digests its assembled file from its real bytes and must match.
   */
  digest(): string {
    return this.sha.digest();
  }

  /**
   * The stopped state of the pages a post-copy switch left stale (ascending), read from the
   * paused RAM file on the pool: each one's xxHash64, which goes with the page to the target and
   * is checked there, and the canonical digest of the whole memory as stopped — what the target
   * must hold once the last page is in. The tracker's own record stays what the target holds.
   */
  async stoppedState(ramPath: string, pool: PageHashPool, stale: Uint32Array): Promise<{ stopHashes: BigUint64Array; memoryDigest: string }> {
    const table = new PageHashTable(this.pages);
    table.copyFrom(this.sha);
    const stopHashes = await hashListedPages(ramPath, pool, stale, table);
    return { stopHashes, memoryDigest: table.digest() };
  }

  /**
   * What a reconnecting target holds of page `index`, told by a reconcile: `data` as it is here
   * (`sha` its SHA-256) if `same`, else other content — then the page is marked as differing from
   * what it is here, and the next scan sends it.
   */
  reconciled(index: number, data: Uint8Array, sha: Uint8Array, same: boolean): void {
    const hash = this.hash(data);
    if (!same) {
      this.held[index] = hash ^ 1n;
      this.unsent.add(index);
      return;
    }
    this.held[index] = hash;
    this.sha.set(index, sha);
  }

  /** Records the bytes read for sending as what the target will hold for that page. */
  sent(index: number, data: Uint8Array): void {
    this.unsent.delete(index);
    this.held[index] = this.hash(data);
    this.sha.setPage(index, Buffer.from(data.buffer, data.byteOffset, data.byteLength));
  }
}

/**
 * Hashes the listed pages (ascending) of a RAM file on the pool's threads: their SHA-256 into
 * `table`, and their xxHash64s, returned in list order.
 */
export async function hashListedPages(ramPath: string, pool: PageHashPool, listed: Uint32Array, table: PageHashTable): Promise<BigUint64Array> {
  const xxh = new BigUint64Array(new SharedArrayBuffer(table.pages * 8));
  const share = Math.max(MIN_LISTED_SHARE, Math.ceil(listed.length / pool.threads));
  const shares: Array<Promise<number>> = [];
  for (let k = 0; k < listed.length; k += share) {
    const runs = Uint32Array.from([...consecutiveRuns(listed.subarray(k, k + share))].flatMap((r) => [r.from, r.to - r.from]));
    shares.push(pool.hashPages({ path: ramPath, pages: table.pages, table: table.shared, runs, xxh64: xxh.buffer as SharedArrayBuffer }));
  }
  await Promise.all(shares);
  return BigUint64Array.from(listed, (i) => xxh[i]!);
}

/** A whole-file scan in `shares` ranges, each a multiple of the 4 MiB read. */
function wholeShares(pages: number, shares: number): Array<{ from: number; to: number }> {
  const size = Math.ceil(pages / shares / SCAN_PAGES) * SCAN_PAGES;
  const out: Array<{ from: number; to: number }> = [];
  for (let from = 0; from < pages; from += size) out.push({ from, to: Math.min(pages, from + size) });
  return out;
}

/** A listed scan in up to `shares` parts of consecutive list entries, none under MIN_LISTED_SHARE. */
function listedShares(listed: Uint32Array, shares: number): Array<{ from: number; to: number; among: Uint32Array }> {
  const size = Math.max(MIN_LISTED_SHARE, Math.ceil(listed.length / shares));
  const out: Array<{ from: number; to: number; among: Uint32Array }> = [];
  for (let k = 0; k < listed.length; k += size) {
    const among = listed.slice(k, k + size);
    out.push({ from: among[0]!, to: among[among.length - 1]! + 1, among });
  }
  return out;
}

/** Ascending page indices as runs of consecutive pages, each at most one 4 MiB read. */
function* consecutiveRuns(pages: Uint32Array): Generator<{ from: number; to: number }> {
  for (let k = 0; k < pages.length; ) {
    let n = 1;
    while (k + n < pages.length && n < SCAN_PAGES && pages[k + n] === pages[k]! + n) n++;
    yield { from: pages[k]!, to: pages[k]! + n };
    k += n;
  }
}
