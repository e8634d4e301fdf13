import { open, type FileHandle } from 'node:fs/promises';
import { BLOCK_SIZE } from '../blocks.js';

/** A block a post-copy has yet to fetch: `settled` once it is present (filled, or written whole by the guest). */
interface Missing {
  settled: Promise<void>;
  settle: () => void;
}

/**
 * A disk as a read-only base image plus a copy-on-write overlay of 4 KiB blocks. The overlay is a
 * sparse file at the same offsets as the base, so a dirty block is read back with one pread; the
 * dirty set is the change tracking that the handoff ships.
 */
export class DiskOverlay {
  private readonly dirty = new Set<number>();
  /** Blocks written since the last `takeEpochDirty`: what a pre-copy epoch must (re)send. */
  private epochDirty = new Set<number>();
  /** Blocks being copied from the base before their first partial write. */
  private readonly materializing = new Map<number, Promise<void>>();
  private writes = 0;
  /**
   * Blocks a post-copy has yet to fetch (their content here is not the VM's): a read of one, or
   * a write that covers it only in part, waits until it is filled — or wholly written by the
   * guest, whose bytes then win. Settled as the block becomes present.
   */
  private readonly missing = new Map<number, Missing>();
  /** Fills under way: a guest write to the block waits for its fill, so that the guest's lands last. */
  private readonly filling = new Map<number, Promise<void>>();
  /** Told of each missing block something waits on (the fetch asks for it ahead of the rest). */
  private demand: (index: number) => void = () => undefined;
  /** How many reads or writes wait on each missing block now. */
  private readonly waiting = new Map<number, number>();

  private constructor(
    readonly sizeBytes: number,
    private readonly base: FileHandle,
    private readonly overlay: FileHandle,
  ) {}

  static async open(basePath: string, overlayPath: string, sizeBytes: number): Promise<DiskOverlay> {
    const base = await open(basePath, 'r');
    const overlay = await open(overlayPath, 'w+');
    return new DiskOverlay(sizeBytes, base, overlay);
  }

  /** Writes so far, of any kind: a changed count means the overlay changed. */
  get writeCount(): number {
    return this.writes;
  }

  get dirtyCount(): number {
    return this.dirty.size;
  }

  /** Indices of the blocks that differ (or may differ) from the base, ascending. */
  dirtyBlocks(): number[] {
    return [...this.dirty].sort((a, b) => a - b);
  }

  /** Blocks written since the previous call, ascending; starts a new epoch. */
  takeEpochDirty(): number[] {
    const taken = [...this.epochDirty].sort((a, b) => a - b);
    this.epochDirty = new Set();
    return taken;
  }

  isDirty(index: number): boolean {
    return this.dirty.has(index);
  }

  /**
   * Post-copy: these blocks are not here yet. Reads of them wait until `fill` puts them in (as
   * Elijah's cloudletfs did), each wait told to `onDemand`'s listener.
   */
  markMissing(indices: Iterable<number>): void {
    for (const i of indices) {
      if (i < 0 || i * BLOCK_SIZE >= this.sizeBytes) throw new RangeError(`disk block ${i} is past the ${this.sizeBytes}-byte disk`);
      if (this.missing.has(i)) continue;
      let settle!: () => void;
      const settled = new Promise<void>((resolve) => (settle = resolve));
      this.missing.set(i, { settled, settle });
    }
  }

  /** The blocks still missing, ascending. */
  missingBlocks(): number[] {
    return [...this.missing.keys()].sort((a, b) => a - b);
  }

  onDemand(listener: (index: number) => void): void {
    this.demand = listener;
  }

  /** The missing blocks something waits on now: told again to a fetch that took over (a restarted worker). */
  waitedOn(): number[] {
    return [...this.waiting.keys()];
  }

  /**
   * Puts a fetched block in, if it is still missing: false when the guest has written the whole
   * block since (its bytes stay). Whoever waited on it reads it once it is in the overlay.
   */
  async fill(index: number, data: Buffer): Promise<boolean> {
    if (data.length !== BLOCK_SIZE) throw new Error(`disk block ${index} has ${data.length} bytes, expected ${BLOCK_SIZE}`);
    // A guest write of the whole block under way: it decides (written, the fetched copy is
    // dropped; failed, the block is missing again and this fills it).
    while (this.filling.has(index)) await this.filling.get(index);
    const m = this.missing.get(index);
    if (!m) return false;
    this.missing.delete(index);
    const filled = (async () => {
      await this.overlay.write(data, 0, BLOCK_SIZE, index * BLOCK_SIZE);
      this.dirty.add(index);
      this.writes++;
    })();
    this.filling.set(index, filled.catch(() => undefined));
    try {
      await filled;
    } catch (err) {
      // Not in: still missing, and its waiters go on waiting for a fill that works.
      this.missing.set(index, m);
      throw err;
    } finally {
      this.filling.delete(index);
    }
    m.settle();
    return true;
  }

  /** Resolves once block `index` holds the VM's content here (at once, unless a post-copy still fetches it). */
  private async present(index: number): Promise<void> {
    for (;;) {
      const m = this.missing.get(index);
      const f = this.filling.get(index);
      if (!m && !f) return;
      if (m) {
        this.waiting.set(index, (this.waiting.get(index) ?? 0) + 1);
        this.demand(index);
        try {
          await m.settled;
        } finally {
          const n = this.waiting.get(index)! - 1;
          if (n > 0) this.waiting.set(index, n);
          else this.waiting.delete(index);
        }
      } else await f;
    }
  }

  /** Waits for every missing block of [position, end): none, unless a post-copy runs. */
  private async presentRange(position: number, end: number): Promise<void> {
    if (this.missing.size === 0 && this.filling.size === 0) return;
    const waits: Array<Promise<void>> = [];
    for (let b = Math.floor(position / BLOCK_SIZE); b * BLOCK_SIZE < end; b++) if (this.missing.has(b) || this.filling.has(b)) waits.push(this.present(b));
    await Promise.all(waits);
  }

  async read(into: Buffer, length: number, position: number): Promise<number> {
    const end = Math.min(position + length, this.sizeBytes);
    await this.presentRange(position, end);
    let done = 0;
    // Runs of consecutive blocks from the same source become one pread.
    for (let pos = position; pos < end; ) {
      const fromOverlay = this.dirty.has(Math.floor(pos / BLOCK_SIZE));
      let runEnd = Math.min(end, (Math.floor(pos / BLOCK_SIZE) + 1) * BLOCK_SIZE);
      while (runEnd < end && this.dirty.has(Math.floor(runEnd / BLOCK_SIZE)) === fromOverlay) {
        runEnd = Math.min(end, runEnd + BLOCK_SIZE);
      }
      const file = fromOverlay ? this.overlay : this.base;
      const { bytesRead } = await file.read(into, done, runEnd - pos, pos);
      // The sparse overlay and the base both read as zeros past their data; fill a short read.
      if (bytesRead < runEnd - pos) into.fill(0, done + bytesRead, done + runEnd - pos);
      done += runEnd - pos;
      pos = runEnd;
    }
    return done;
  }

  async write(from: Buffer, length: number, position: number): Promise<number> {
    if (position + length > this.sizeBytes) throw Object.assign(new Error('write past end of disk'), { code: 'ENOSPC' });
    const first = Math.floor(position / BLOCK_SIZE);
    const last = Math.floor((position + length - 1) / BLOCK_SIZE);
    // A block only partly covered by this write needs its base content in the overlay first.
    const partial = new Set<number>();
    if (position % BLOCK_SIZE !== 0) partial.add(first);
    if ((position + length) % BLOCK_SIZE !== 0) partial.add(last);
    // A block still to be fetched: one written only in part needs its content first; one
    // written whole is the guest's from now on (taken out of the fetch's way before the write).
    const claimed: Array<[number, Missing]> = [];
    let written!: () => void;
    if (this.missing.size > 0 || this.filling.size > 0) {
      for (const b of partial) await this.present(b);
      for (let b = first; b <= last; b++) {
        if (partial.has(b)) continue;
        while (this.filling.has(b)) await this.filling.get(b);
        const m = this.missing.get(b);
        if (m) claimed.push([b, m]);
      }
      // Claimed at once: a read of one waits for this write, a fill for its outcome.
      const writing = new Promise<void>((resolve) => (written = resolve));
      for (const [b] of claimed) {
        this.missing.delete(b);
        this.filling.set(b, writing);
      }
    }
    const release = () => {
      for (const [b] of claimed) this.filling.delete(b);
      written?.();
    };
    try {
      for (const b of partial) await this.materialize(b);
      this.writes++;
      await this.overlay.write(from, 0, length, position);
    } catch (err) {
      // Not written: the blocks it claimed are the fetch's again.
      for (const [b, m] of claimed) this.missing.set(b, m);
      release();
      throw err;
    }
    // Whole blocks turn dirty only once written, so a concurrent read sees old or new, never zeros.
    for (let b = first; b <= last; b++) {
      this.dirty.add(b);
      this.epochDirty.add(b);
    }
    release();
    for (const [, m] of claimed) m.settle();
    return length;
  }

  /** Reads one whole block of the current disk content. */
  async readBlock(index: number, into: Buffer = Buffer.alloc(BLOCK_SIZE)): Promise<Buffer> {
    await this.read(into, BLOCK_SIZE, index * BLOCK_SIZE);
    return into;
  }

  /** Sets one whole block (the target assembling a disk from received blocks). */
  async writeBlock(index: number, data: Buffer): Promise<void> {
    if (data.length !== BLOCK_SIZE) throw new Error(`disk block ${index} has ${data.length} bytes, expected ${BLOCK_SIZE}`);
    this.dirty.add(index);
    this.writes++;
    await this.overlay.write(data, 0, BLOCK_SIZE, index * BLOCK_SIZE);
  }

  /**
   * Whole blocks another process wrote into the overlay file at their offsets (a target
   * assembling the disk from received blocks): from now on they are read from the overlay.
   */
  markWritten(indices: Iterable<number>): void {
    for (const i of indices) this.dirty.add(i);
    this.writes++;
  }

  async flush(): Promise<void> {
    await this.overlay.sync();
  }

  async close(): Promise<void> {
    await Promise.allSettled([this.base.close(), this.overlay.close()]);
  }

  private async materialize(index: number): Promise<void> {
    if (this.dirty.has(index)) return;
    let pending = this.materializing.get(index);
    if (!pending) {
      pending = (async () => {
        const block = Buffer.alloc(BLOCK_SIZE);
        await this.base.read(block, 0, BLOCK_SIZE, index * BLOCK_SIZE);
        await this.overlay.write(block, 0, BLOCK_SIZE, index * BLOCK_SIZE);
        this.dirty.add(index);
      })().finally(() => this.materializing.delete(index));
      this.materializing.set(index, pending);
    }
    await pending;
  }
}
