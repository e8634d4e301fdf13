import { open, type FileHandle } from 'node:fs/promises';
import { BLOCK_SIZE } from '../blocks.js';
import type { VmHostClient } from '../host/vm-host-client.js';
import type { DiskBlocks } from './disk-blocks.js';

/**
 * A worker's view of a disk whose overlay a VM host serves (see DiskOverlay there): the dirty
 * sets come from the host, the bytes are read (and, on a target, written) straight from the
 * overlay file at the same offsets — never through the FUSE mount. A block the host has reported
 * dirty, or that was written through this view, is read from the overlay, any other from the
 * base: the host marks a block dirty only once its whole content is in the overlay file, and
 * marks are never taken back.
 */
export class HostedDisk implements DiskBlocks {
  private readonly known = new Set<number>();
  /** Written through this view, not yet reported to the host (see writeBlocks). */
  private unmarked: number[] = [];

  private constructor(
    readonly sizeBytes: number,
    private readonly host: VmHostClient,
    private readonly base: FileHandle,
    private readonly overlay: FileHandle,
  ) {}

  static async open(host: VmHostClient, basePath: string, overlayPath: string, sizeBytes: number): Promise<HostedDisk> {
    const base = await open(basePath, 'r');
    const overlay = await open(overlayPath, 'r+').catch(async (err) => {
      await base.close();
      throw err;
    });
    return new HostedDisk(sizeBytes, host, base, overlay);
  }

  /** Indices of the blocks that differ (or may differ) from the base, ascending. */
  async dirtyBlocks(): Promise<number[]> {
    return this.learn(await this.host.call('dirtyBlocks'));
  }

  /** Blocks written since the previous call, ascending; starts a new epoch. */
  async takeEpochDirty(): Promise<number[]> {
    return this.learn(await this.host.call('takeEpochDirty'));
  }

  /** Writes so far, of any kind, as the host counts them: a changed count means the overlay changed. */
  async writeCount(): Promise<number> {
    return (await this.host.status()).diskWrites;
  }

  async dirtyCount(): Promise<number> {
    return (await this.host.status()).dirtyBlocks;
  }

  async readBlock(index: number, into: Buffer = Buffer.alloc(BLOCK_SIZE)): Promise<Buffer> {
    const file = this.known.has(index) ? this.overlay : this.base;
    const { bytesRead } = await file.read(into, 0, BLOCK_SIZE, index * BLOCK_SIZE);
    // The sparse overlay and the base both read as zeros past their data.
    if (bytesRead < BLOCK_SIZE) into.fill(0, bytesRead, BLOCK_SIZE);
    return into;
  }

  /**
   * Sets whole blocks from `first` on (a target assembling the disk). They read back through
   * this view at once; the host learns of them at `markWritten`, once per applied batch rather
   * than once per run: a round trip to the host each is time on the stopped VM's path. A block
   * written but not yet marked reads as the base through the VM's disk: a worker that dies
   * between the two holds it as the base, and the source's next attempt sends it again.
   */
  async writeBlocks(first: number, blocks: Buffer[]): Promise<void> {
    for (const [k, data] of blocks.entries()) {
      if (data.length !== BLOCK_SIZE) throw new Error(`disk block ${first + k} has ${data.length} bytes, expected ${BLOCK_SIZE}`);
    }
    await this.overlay.writev(blocks, first * BLOCK_SIZE);
    for (let k = 0; k < blocks.length; k++) {
      this.known.add(first + k);
      this.unmarked.push(first + k);
    }
  }

  /** Tells the host of the blocks written since the last call. */
  async markWritten(): Promise<void> {
    if (this.unmarked.length === 0) return;
    const indices = this.unmarked;
    this.unmarked = [];
    await this.host.call('markWritten', { indices });
  }

  async close(): Promise<void> {
    await Promise.allSettled([this.base.close(), this.overlay.close()]);
  }

  private learn(indices: number[]): number[] {
    for (const i of indices) this.known.add(i);
    return indices;
  }
}
