import { createHash } from 'node:crypto';
import { open, stat } from 'node:fs/promises';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { BLOCK_SIZE, blockCount } from '../blocks.js';

/**
 * The canonical digest of a memory or disk image: SHA-256 over the image size and, in block
 * order, (index, SHA-256) of every non-zero 4 KiB block. It depends only on content, so the
 * target can compute it from base + overlay without reading an 8 GiB sparse disk, and the source
 * by scanning a file: both ways must agree (test/image-digest.test.ts holds them to it).
 */
export type BlockHashes = Map<number, Buffer>;

const DOMAIN = Buffer.from('ehoff-image-digest-v1\0');
const SCAN_BYTES = 4 << 20;
const ZERO_SCAN = Buffer.alloc(SCAN_BYTES);
const ZERO_BLOCK = Buffer.alloc(BLOCK_SIZE);

export function blockHash(block: Buffer): Buffer {
  return createHash('sha256').update(block).digest();
}

export function isZeroBlock(block: Buffer): boolean {
  return block.equals(ZERO_BLOCK);
}

/** The same digest built block by block, in ascending order, without holding the hashes. */
export class ImageDigest {
  private readonly h = createHash('sha256').update(DOMAIN);
  private readonly index = Buffer.alloc(8);
  private last = -1;

  constructor(sizeBytes: number) {
    const size = Buffer.alloc(8);
    size.writeBigUInt64LE(BigInt(sizeBytes));
    this.h.update(size);
  }

  /** Adds a non-zero block; blocks must come in ascending index order. */
  add(index: number, blockHashValue: Buffer): void {
    if (index <= this.last) throw new Error(`image digest: block ${index} after block ${this.last}`);
    this.last = index;
    this.index.writeBigUInt64LE(BigInt(index));
    this.h.update(this.index).update(blockHashValue);
  }

  /**
   * Adds packed 40-byte (u64 index, SHA-256) records of non-zero blocks in one update. The run
   * must be in ascending order and after every block added before; only its ends are checked,
   * so callers pass runs cut from a table laid out by index (see PageHashTable).
   */
  addRun(records: Buffer): void {
    if (records.length === 0) return;
    if (records.length % 40 !== 0) throw new Error(`image digest: a run of ${records.length} bytes is not whole records`);
    const first = Number(records.readBigUInt64LE(0));
    const last = Number(records.readBigUInt64LE(records.length - 40));
    if (first <= this.last || last < first) throw new Error(`image digest: run ${first}..${last} after block ${this.last}`);
    this.last = last;
    this.h.update(records);
  }

  hex(): string {
    return this.h.digest('hex');
  }
}

/** Digest from (index → block hash) of the non-zero blocks; iteration order does not matter. */
export function digestFromBlockHashes(sizeBytes: number, hashes: BlockHashes): string {
  const d = new ImageDigest(sizeBytes);
  for (const i of [...hashes.keys()].sort((a, b) => a - b)) d.add(i, hashes.get(i)!);
  return d.hex();
}

/**
 * Calls `visit` with (index, SHA-256) of every non-zero block of a file, in order. Zero regions
 * are skipped 4 MiB at a time, which keeps a fresh sparse disk cheap. Yields to the event loop
 * between reads: the calling process may also be serving a FUSE disk.
 */
async function forEachNonZeroBlock(
  path: string,
  sizeBytes: number | undefined,
  visit: (index: number, hash: Buffer) => void,
  range?: { from: number; to: number },
): Promise<number> {
  const file = await open(path, 'r');
  try {
    const size = sizeBytes ?? (await file.stat()).size;
    const buf = Buffer.alloc(SCAN_BYTES);
    for (let pos = range?.from ?? 0; pos < (range ? Math.min(range.to, size) : size); pos += SCAN_BYTES) {
      const want = Math.min(SCAN_BYTES, size - pos);
      const { bytesRead } = await file.read(buf, 0, want, pos);
      if (bytesRead < want) buf.fill(0, bytesRead, want);
      if (want === SCAN_BYTES && buf.equals(ZERO_SCAN)) continue;
      for (let off = 0; off < want; off += BLOCK_SIZE) {
        const block = buf.subarray(off, Math.min(off + BLOCK_SIZE, want));
        const full = block.length === BLOCK_SIZE ? block : Buffer.concat([block, ZERO_BLOCK.subarray(block.length)]);
        if (!isZeroBlock(full)) visit((pos + off) / BLOCK_SIZE, blockHash(full));
      }
      await yieldToLoop();
    }
    return size;
  } finally {
    await file.close();
  }
}

/** A whole image's block hashes (the base image's disk index is made of these). */
export async function scanImage(path: string, sizeBytes?: number): Promise<{ sizeBytes: number; hashes: BlockHashes }> {
  const hashes: BlockHashes = new Map();
  const size = await forEachNonZeroBlock(path, sizeBytes, (i, h) => hashes.set(i, h));
  return { sizeBytes: size, hashes };
}

/** The digest of a whole file, streamed: memory use does not depend on the file's size. */
export async function digestOfFile(path: string, sizeBytes?: number): Promise<string> {
  const size = sizeBytes ?? (await stat(path)).size;
  const digest = new ImageDigest(size);
  await forEachNonZeroBlock(path, size, (i, h) => digest.add(i, h));
  return digest.hex();
}

/**
 * (index, SHA-256) of the non-zero blocks in [from, to) of a file, packed as 40-byte records: one
 * share of a digest that several threads compute side by side (see `digestOfFileOn`).
 */
export async function blockHashRecords(path: string, sizeBytes: number, from: number, to: number): Promise<Uint8Array> {
  const parts: Buffer[] = [];
  await forEachNonZeroBlock(path, sizeBytes, (i, h) => {
    const rec = Buffer.alloc(40);
    rec.writeBigUInt64LE(BigInt(i), 0);
    h.copy(rec, 8);
    parts.push(rec);
  }, { from, to });
  return Buffer.concat(parts);
}

/** Folds ordered 40-byte (index, hash) records, range by range, into the image digest. */
export function digestFromRecords(sizeBytes: number, ranges: Uint8Array[]): string {
  const d = new ImageDigest(sizeBytes);
  for (const r of ranges) {
    const b = Buffer.from(r.buffer, r.byteOffset, r.byteLength);
    for (let off = 0; off < b.length; off += 40) d.add(Number(b.readBigUInt64LE(off)), b.subarray(off + 8, off + 40));
  }
  return d.hex();
}

/** Base block hashes with some blocks replaced (the overlay): the image the VM sees. */
export function overlayHashes(base: BlockHashes, overlay: Iterable<[number, Buffer]>): BlockHashes {
  return mergeBlockHashes(base, Array.from(overlay, ([index, block]) => [index, isZeroBlock(block) ? null : blockHash(block)] as [number, Buffer | null]));
}

/** Base block hashes with some blocks' hashes replaced; null: the block is now all zeros. */
export function mergeBlockHashes(base: BlockHashes, replaced: Iterable<[number, Buffer | null]>): BlockHashes {
  const merged = new Map(base);
  for (const [index, hash] of replaced) {
    if (hash === null) merged.delete(index);
    else merged.set(index, hash);
  }
  return merged;
}

/** Block hashes serialized as (u64 index, 32-byte hash) records, the base image's index file. */
export function encodeBlockHashes(hashes: BlockHashes): Buffer {
  const keys = [...hashes.keys()].sort((a, b) => a - b);
  const out = Buffer.alloc(keys.length * 40);
  keys.forEach((k, n) => {
    out.writeBigUInt64LE(BigInt(k), n * 40);
    hashes.get(k)!.copy(out, n * 40 + 8);
  });
  return out;
}

export function decodeBlockHashes(data: Buffer, sizeBytes: number): BlockHashes {
  if (data.length % 40 !== 0) throw new Error(`block hash index has ${data.length} bytes, not a multiple of 40`);
  const hashes: BlockHashes = new Map();
  const limit = blockCount(sizeBytes);
  for (let off = 0; off < data.length; off += 40) {
    const index = Number(data.readBigUInt64LE(off));
    if (index >= limit) throw new Error(`block hash index names block ${index}, past the image's ${limit} blocks`);
    hashes.set(index, Buffer.from(data.subarray(off + 8, off + 40)));
  }
  return hashes;
}

export async function sha256OfFile(path: string): Promise<string> {
  const { createReadStream } = await import('node:fs');
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) h.update(chunk as Buffer);
  return h.digest('hex');
}
