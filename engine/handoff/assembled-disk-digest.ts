import { BLOCK_SIZE } from '../blocks.js';
import type { CachedBaseImage } from '../image/image-cache.js';
import type { DiskBlocks } from '../disk/disk-blocks.js';
import { blockHash, digestFromBlockHashes, isZeroBlock, mergeBlockHashes } from '../image/image-digest.js';
import { BackgroundRounds } from './background-rounds.js';
import { COALESCE_MS } from './assembled-memory-digest.js';

/**
 * The digest of a disk under assembly (base + overlay), kept current while the overlay arrives,
 * on the same terms as AssembledMemoryDigest: every overlay block is read back through the
 * overlay after its last write and hashed, so the check at the stop reads only what the last
 * frames wrote (a logger's thousands of blocks took 270 ms there when read at the end). Writes
 * through the overlay by anything else (the FUSE side) are caught by its write count.
 */
export class AssembledDiskDigest {
  /** SHA-256 of each overlay block as read back; null for an all-zero block. */
  private readonly hashes = new Map<number, Buffer | null>();
  private dirty = new Set<number>();
  private readonly rounds: BackgroundRounds;

  constructor(
    private readonly base: CachedBaseImage,
    private readonly disk: DiskBlocks,
  ) {
    this.rounds = new BackgroundRounds(() => this.round(), () => this.dirty.size > 0, 'hashing the assembled disk overlay');
  }

  /** Block `index` was written; call after the write returned. */
  written(index: number): void {
    this.dirty.add(index);
    this.rounds.poke(COALESCE_MS);
  }

  /** Marks every overlay block for reading again. */
  async rehashAll(): Promise<void> {
    for (const i of await this.disk.dirtyBlocks()) this.written(i);
  }

  /** The digest once every block written so far has been read back; call when no more come. */
  async settle(): Promise<string> {
    const hashes = await this.settledHashes();
    return digestFromBlockHashes(this.base.manifest.disk.sizeBytes, mergeBlockHashes(await this.base.diskBlockHashes(), hashes));
  }

  /**
   * The digest with `standIns` in place of what is here for those blocks (a post-copy's stale
   * blocks, by the SHA-256s the source stopped with; null: all zeros): the disk as it will be
   * once they are fetched.
   */
  async settleWith(standIns: ReadonlyMap<number, Buffer | null>): Promise<string> {
    const hashes = new Map(await this.settledHashes());
    for (const [i, h] of standIns) hashes.set(i, h);
    return digestFromBlockHashes(this.base.manifest.disk.sizeBytes, mergeBlockHashes(await this.base.diskBlockHashes(), hashes));
  }

  /** Every overlay block's hash as read back after its last write (null: all zeros). */
  async settledHashes(): Promise<ReadonlyMap<number, Buffer | null>> {
    // Any overlay block not seen through `written` is read too: the overlay's own set rules.
    for (const i of await this.disk.dirtyBlocks()) if (!this.hashes.has(i)) this.dirty.add(i);
    await this.rounds.settle();
    return this.hashes;
  }

  close(): void {
    this.rounds.close();
  }

  private async round(): Promise<void> {
    const blocks = [...this.dirty];
    this.dirty = new Set();
    const buf = Buffer.alloc(BLOCK_SIZE);
    for (const i of blocks) {
      await this.disk.readBlock(i, buf);
      this.hashes.set(i, isZeroBlock(buf) ? null : blockHash(buf));
    }
  }
}
