import { open, type FileHandle } from 'node:fs/promises';
import { BLOCK_SIZE } from '../blocks.js';

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

  async read(into: Buffer, length: number, position: number): Promise<number> {
    const end = Math.min(position + length, this.sizeBytes);
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
    for (const b of partial) await this.materialize(b);
    this.writes++;
    await this.overlay.write(from, 0, length, position);
    // Whole blocks turn dirty only once written, so a concurrent read sees old or new, never zeros.
    for (let b = first; b <= last; b++) {
      this.dirty.add(b);
      this.epochDirty.add(b);
    }
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
