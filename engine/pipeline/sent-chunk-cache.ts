import { BLOCK_SIZE } from '../blocks.js';
import { chunkKey, type Space } from './chunk-records.js';

/**
 * The bytes last sent for each of the most recently sent chunks, so that a chunk sent again (a
 * page the guest dirtied after it went) can travel as its XOR with what the target already holds
 * — QEMU's XBZRLE idea, with the batch's compressor in place of its run-length code. Records
 * that update in place (a key-value store, a counter, a float grid stepping) differ from their
 * previous version in a few bytes, so the XOR is mostly zeros.
 *
 * Bounded, least recently sent forgotten first: one slab of `capacityChunks` × 4 KiB allocated on
 * first use, so an idle VM's handoff pays nothing and a busy one's source grows by a fixed amount.
 * The caller keeps it exact: every chunk sent as data is `put`, every chunk sent any other way
 * (zero, a reference) is `forget`-ed, because the target's copy then is not what was cached.
 */
export class SentChunkCache {
  private slab: Buffer | undefined;
  /** Packed (space, index) → slot; Map order is the recency order (oldest first). */
  private readonly slots = new Map<number, number>();
  private readonly free: number[] = [];
  private used = 0;

  constructor(readonly capacityChunks: number) {
    if (!Number.isInteger(capacityChunks) || capacityChunks < 0) throw new RangeError(`sent-chunk cache capacity must be a whole number of chunks ≥ 0, got ${capacityChunks}`);
  }

  /** The bytes last sent for this chunk, or undefined. A view into the cache: copy it to keep it. */
  get(space: Space, index: number): Buffer | undefined {
    const slot = this.slots.get(chunkKey(space, index));
    if (slot === undefined) return undefined;
    return this.slab!.subarray(slot * BLOCK_SIZE, (slot + 1) * BLOCK_SIZE);
  }

  put(space: Space, index: number, data: Uint8Array): void {
    if (this.capacityChunks === 0) return;
    // Not zero-filled: only slots written are read, and untouched pages cost no memory.
    this.slab ??= Buffer.allocUnsafeSlow(this.capacityChunks * BLOCK_SIZE);
    const key = chunkKey(space, index);
    let slot = this.slots.get(key);
    if (slot !== undefined) this.slots.delete(key);
    else slot = this.free.pop() ?? (this.used < this.capacityChunks ? this.used++ : this.evictOldest());
    this.slots.set(key, slot);
    this.slab.set(data.subarray(0, BLOCK_SIZE), slot * BLOCK_SIZE);
  }

  forget(space: Space, index: number): void {
    const key = chunkKey(space, index);
    const slot = this.slots.get(key);
    if (slot === undefined) return;
    this.slots.delete(key);
    this.free.push(slot);
  }

  get size(): number {
    return this.slots.size;
  }

  private evictOldest(): number {
    const [key, slot] = this.slots.entries().next().value!;
    this.slots.delete(key);
    return slot;
  }
}
