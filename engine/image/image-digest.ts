import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
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

/** Digest from (index → block hash) of the non-zero blocks; iteration order does not matter. */
export function digestFromBlockHashes(sizeBytes: number, hashes: BlockHashes): string {
  const h = createHash('sha256').update(DOMAIN);
  const size = Buffer.alloc(8);
  size.writeBigUInt64LE(BigInt(sizeBytes));
  h.update(size);
  const index = Buffer.alloc(8);
  for (const i of [...hashes.keys()].sort((a, b) => a - b)) {
    index.writeBigUInt64LE(BigInt(i));
    h.update(index).update(hashes.get(i)!);
  }
  return h.digest('hex');
}

/**
 * Reads a whole image file and returns its block hashes. Zero regions are skipped 4 MiB at a
 * time, which keeps a fresh sparse disk cheap. Yields to the event loop between reads: the
 * calling process may also be serving a FUSE disk.
 */
export async function scanImage(path: string, sizeBytes?: number): Promise<{ sizeBytes: number; hashes: BlockHashes }> {
  const file = await open(path, 'r');
  try {
    const size = sizeBytes ?? (await file.stat()).size;
    const hashes: BlockHashes = new Map();
    const buf = Buffer.alloc(SCAN_BYTES);
    for (let pos = 0; pos < size; pos += SCAN_BYTES) {
      const want = Math.min(SCAN_BYTES, size - pos);
      const { bytesRead } = await file.read(buf, 0, want, pos);
      if (bytesRead < want) buf.fill(0, bytesRead, want);
      if (want === SCAN_BYTES && buf.equals(ZERO_SCAN)) continue;
      for (let off = 0; off < want; off += BLOCK_SIZE) {
        const block = buf.subarray(off, Math.min(off + BLOCK_SIZE, want));
        const full = block.length === BLOCK_SIZE ? block : Buffer.concat([block, ZERO_BLOCK.subarray(block.length)]);
        if (!isZeroBlock(full)) hashes.set((pos + off) / BLOCK_SIZE, blockHash(full));
      }
      await yieldToLoop();
    }
    return { sizeBytes: size, hashes };
  } finally {
    await file.close();
  }
}

export async function digestOfFile(path: string, sizeBytes?: number): Promise<string> {
  const { sizeBytes: size, hashes } = await scanImage(path, sizeBytes);
  return digestFromBlockHashes(size, hashes);
}

/** Base block hashes with some blocks replaced (the overlay): the image the VM sees. */
export function overlayHashes(base: BlockHashes, overlay: Iterable<[number, Buffer]>): BlockHashes {
  const merged = new Map(base);
  for (const [index, block] of overlay) {
    if (isZeroBlock(block)) merged.delete(index);
    else merged.set(index, blockHash(block));
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
