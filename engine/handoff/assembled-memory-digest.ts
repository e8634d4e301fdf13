import { PageHashTable, type PageRunsTask } from '../memory/page-hash-table.js';
import { BackgroundRounds } from './background-rounds.js';

/** What hashes the pages: the cloudlet's codec pool. */
export interface PageHasher {
  hashPages(task: PageRunsTask): Promise<number>;
  threads: number;
}

/** Writes arriving within this long are hashed in one round (the live epochs write in bursts). */
export const COALESCE_MS = 100;

/**
 * The digest of a RAM file under assembly, kept current while the overlay arrives so that the
 * stop-time check does not read the whole file with the VM stopped (a 1 GiB file took 0.5–1.3 s
 * there on this machine).
 *
 * Every page's SHA-256 is read back from the file itself, by a pool thread, after the last write
 * to it: one full pass starts when the handoff is prepared, and afterwards each page written is
 * marked dirty and hashed again in the next round. A page is marked only once its write has
 * returned, with the very offsets that were written, and its mark is cleared before the round
 * that re-reads it is dispatched, one round at a time: a write racing a read leaves the page
 * dirty for the next round, so when no page is dirty every hash is of the file's bytes after
 * their last write through `written`. What this does not see is a write by anything else; the
 * caller rules that out with the file's modification time (see TargetHandoffs) and, if it moved,
 * calls `rehashAll`.
 */
export class AssembledMemoryDigest {
  readonly table: PageHashTable;
  private readonly dirty: Uint8Array;
  private dirtyCount: number;
  private readonly rounds: BackgroundRounds;

  constructor(
    private readonly path: string,
    readonly pages: number,
    private readonly hasher: PageHasher,
  ) {
    this.table = new PageHashTable(pages);
    this.dirty = new Uint8Array(pages).fill(1);
    this.dirtyCount = pages;
    this.rounds = new BackgroundRounds(() => this.round(), () => this.dirtyCount > 0, `hashing the assembled RAM file ${path}`);
  }

  /** Starts hashing in the background; the first round is the full pass. */
  start(): void {
    this.rounds.poke(0);
  }

  /** Pages [first, first + count) were written; call after the write returned. */
  written(first: number, count: number): void {
    for (let i = first; i < first + count; i++) {
      if (this.dirty[i] === 0) {
        this.dirty[i] = 1;
        this.dirtyCount++;
      }
    }
    this.rounds.poke(COALESCE_MS);
  }

  /** Marks the whole file for reading again. */
  rehashAll(): void {
    this.written(0, this.pages);
  }

  /**
   * The digest once every page written so far has been hashed again. Call when no more writes
   * come: it waits for the round in flight and hashes whatever is left.
   */
  async settle(): Promise<string> {
    await this.rounds.settle();
    return this.table.digest();
  }

  /** Stops starting rounds (the one in flight finishes). */
  close(): void {
    this.rounds.close();
  }

  /** Takes the dirty pages (clearing their marks) and hashes them on every pool thread. */
  private async round(): Promise<void> {
    const perThread = Math.ceil(this.dirtyCount / this.hasher.threads);
    this.dirtyCount = 0;
    // Runs of dirty pages as (first, count) pairs, cut into shares of about equal page counts.
    const shares: number[][] = [];
    let share: number[] = [];
    let inShare = 0;
    for (let i = 0; i < this.pages; ) {
      if (this.dirty[i] === 0) {
        i++;
        continue;
      }
      const first = i;
      while (i < this.pages && this.dirty[i] === 1 && inShare + (i - first) < perThread) this.dirty[i++] = 0;
      share.push(first, i - first);
      inShare += i - first;
      if (inShare >= perThread) {
        shares.push(share);
        share = [];
        inShare = 0;
      }
    }
    if (share.length > 0) shares.push(share);
    const table = this.table.shared;
    await Promise.all(shares.map((runs) => this.hasher.hashPages({ path: this.path, pages: this.pages, table, runs: Uint32Array.from(runs) })));
  }
}
