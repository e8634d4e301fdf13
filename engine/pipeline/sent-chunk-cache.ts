import { closeSync, constants, fstatSync, ftruncateSync, openSync, readSync, writeSync } from 'node:fs';
import { BLOCK_SIZE } from '../blocks.js';
import { chunkKey, chunkOfKey, type Space } from './chunk-records.js';

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
 *
 * Kept in a file on tmpfs (`inFile`), it outlives the source's worker: a stream resumed after a
 * crash goes on sending re-dirtied chunks as XORs. A crash may leave a slot's bytes and its key
 * out of step; that is why a resumed stream keeps only the chunks whose bytes hash to what the
 * target says it holds (keepHeldSends), never trusting the file alone.
 */
export class SentChunkCache {
  /** Packed (space, index) → slot; Map order is the recency order (oldest first). */
  private readonly slots = new Map<number, number>();
  private readonly free: number[] = [];
  private used = 0;

  constructor(
    readonly capacityChunks: number,
    private readonly slab: Slab = new MemorySlab(capacityChunks),
  ) {
    if (!Number.isInteger(capacityChunks) || capacityChunks < 0) throw new RangeError(`sent-chunk cache capacity must be a whole number of chunks ≥ 0, got ${capacityChunks}`);
    // A file kept by an earlier process: its slots as they are (their order is lost, not their bytes).
    for (const [slot, key] of slab.keys()) this.slots.set(key, slot);
    if (this.slots.size > 0) {
      this.used = capacityChunks;
      const taken = new Set(this.slots.values());
      for (let slot = 0; slot < capacityChunks; slot++) if (!taken.has(slot)) this.free.push(slot);
    }
  }

  /** A cache kept in the file at `path` (on tmpfs), taken up as it is if it exists. */
  static inFile(path: string, capacityChunks: number): SentChunkCache {
    return new SentChunkCache(capacityChunks, new FileSlab(path, capacityChunks));
  }

  /** The bytes last sent for this chunk, or undefined. A view into the cache: copy it to keep it. */
  get(space: Space, index: number): Buffer | undefined {
    const slot = this.slots.get(chunkKey(space, index));
    return slot === undefined ? undefined : this.slab.read(slot);
  }

  put(space: Space, index: number, data: Uint8Array): void {
    if (this.capacityChunks === 0) return;
    const key = chunkKey(space, index);
    let slot = this.slots.get(key);
    if (slot !== undefined) this.slots.delete(key);
    else slot = this.free.pop() ?? (this.used < this.capacityChunks ? this.used++ : this.evictOldest());
    this.slots.set(key, slot);
    try {
      this.slab.write(slot, key, data.subarray(0, BLOCK_SIZE));
    } catch {
      // A full tmpfs costs the XOR for this chunk, not the stream: it is just not cached.
      this.slots.delete(key);
      this.free.push(slot);
    }
  }

  forget(space: Space, index: number): void {
    const key = chunkKey(space, index);
    const slot = this.slots.get(key);
    if (slot === undefined) return;
    this.slots.delete(key);
    this.slab.clear(slot);
    this.free.push(slot);
  }

  /**
   * Forgets every chunk for which `holds` says the target's copy is not the cached bytes (a
   * resumed stream checks them against what the target says it holds).
   */
  keepWhere(holds: (space: Space, index: number, bytes: Buffer) => boolean): void {
    for (const [key, slot] of [...this.slots]) {
      const { space, index } = chunkOfKey(key);
      if (!holds(space, index, this.slab.read(slot))) this.forget(space, index);
    }
  }

  get size(): number {
    return this.slots.size;
  }

  /** Closes the file behind it, if any (the file stays). */
  close(): void {
    this.slab.close();
  }

  private evictOldest(): number {
    const [key, slot] = this.slots.entries().next().value!;
    this.slots.delete(key);
    return slot;
  }
}

/** Where the cached bytes live. */
interface Slab {
  read(slot: number): Buffer;
  write(slot: number, key: number, data: Uint8Array): void;
  clear(slot: number): void;
  /** The slots in use, as an earlier process left them. */
  keys(): Array<[slot: number, key: number]>;
  close(): void;
}

/** In the process: one buffer allocated on first use, so an idle VM's handoff pays nothing. */
class MemorySlab implements Slab {
  private buf: Buffer | undefined;

  constructor(private readonly capacity: number) {}

  read(slot: number): Buffer {
    return this.buf!.subarray(slot * BLOCK_SIZE, (slot + 1) * BLOCK_SIZE);
  }

  write(slot: number, _key: number, data: Uint8Array): void {
    // Not zero-filled: only slots written are read, and untouched pages cost no memory.
    this.buf ??= Buffer.allocUnsafeSlow(this.capacity * BLOCK_SIZE);
    this.buf.set(data, slot * BLOCK_SIZE);
  }

  clear(): void {}

  keys(): Array<[number, number]> {
    return [];
  }

  close(): void {}
}

/**
 * In a sparse file on tmpfs: an index of one u64 per slot (its chunk key + 1; 0 for none), then
 * the slots' bytes. Plain positional reads and writes, synchronous: on tmpfs a 4 KiB one is a
 * memory copy, and the encoder asks for one chunk at a time.
 */
class FileSlab implements Slab {
  private readonly fd: number;
  private readonly page = Buffer.alloc(BLOCK_SIZE);
  private readonly keyBuf = Buffer.alloc(8);

  constructor(path: string, private readonly capacity: number) {
    this.fd = openSync(path, constants.O_RDWR | constants.O_CREAT, 0o600);
    try {
      // A file of another size was laid out for another capacity: its index does not read
      // as this one's, so it starts empty.
      if (fstatSync(this.fd).size !== capacity * (8 + BLOCK_SIZE)) ftruncateSync(this.fd, 0);
      ftruncateSync(this.fd, capacity * (8 + BLOCK_SIZE));
    } catch (err) {
      closeSync(this.fd);
      throw err;
    }
  }

  read(slot: number): Buffer {
    readSync(this.fd, this.page, 0, BLOCK_SIZE, this.dataAt(slot));
    return this.page;
  }

  write(slot: number, key: number, data: Uint8Array): void {
    // The bytes before the key: a crash between leaves the old key over new bytes, which the
    // resumed stream's check against the target's hashes drops.
    writeSync(this.fd, data, 0, BLOCK_SIZE, this.dataAt(slot));
    this.keyBuf.writeBigUInt64LE(BigInt(key + 1));
    writeSync(this.fd, this.keyBuf, 0, 8, slot * 8);
  }

  clear(slot: number): void {
    this.keyBuf.writeBigUInt64LE(0n);
    writeSync(this.fd, this.keyBuf, 0, 8, slot * 8);
  }

  keys(): Array<[number, number]> {
    const index = Buffer.alloc(this.capacity * 8);
    readSync(this.fd, index, 0, index.length, 0);
    const out: Array<[number, number]> = [];
    for (let slot = 0; slot < this.capacity; slot++) {
      const k = index.readBigUInt64LE(slot * 8);
      if (k !== 0n) out.push([slot, Number(k - 1n)]);
    }
    return out;
  }

  close(): void {
    closeSync(this.fd);
  }

  private dataAt(slot: number): number {
    return this.capacity * 8 + slot * BLOCK_SIZE;
  }
}
