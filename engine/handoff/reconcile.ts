import type { FileHandle } from 'node:fs/promises';
import { BLOCK_SIZE } from '../blocks.js';
import { blockHash, type BlockHashes } from '../image/image-digest.js';
import { ZERO_PAGE_SHA, type PageHashTable } from '../memory/page-hash-table.js';
import type { MemoryTracker } from '../memory/memory-tracker.js';
import { readRuns } from '../pipeline/chunk-source.js';
import { Space } from '../pipeline/chunk-records.js';
import type { SentChunkCache } from '../pipeline/sent-chunk-cache.js';
import { HELD_PREFIX_BYTES, type HeldChunks } from '../wire/holdings.js';

/**
 * Reconciling a resumed stream (attempt > 1) with what its target already assembled: the
 * target names every chunk it holds with other content than the base's (by SHA-256 prefix), and
 * the source sends only the chunks whose content now differs from that — a pre-copy that goes on
 * from where the broken attempt got to, instead of starting over.
 */

/** The chunks among `indices` (ascending) whose SHA-256 differs from the base's. */
export function heldDifferences(indices: Iterable<number>, held: (index: number) => Buffer, base: (index: number) => Buffer): HeldChunks {
  const out: number[] = [];
  const prefixes: Buffer[] = [];
  for (const i of indices) {
    const sha = held(i);
    if (sha.equals(base(i))) continue;
    out.push(i);
    prefixes.push(sha.subarray(0, HELD_PREFIX_BYTES));
  }
  return { indices: Uint32Array.from(out), prefixes: Buffer.concat(prefixes) };
}

/** The target's memory holdings: pages of the assembled RAM whose hash is not the base page's. */
export function heldPages(assembled: PageHashTable, base: PageHashTable): HeldChunks {
  const all = { *[Symbol.iterator]() { for (let i = 0; i < assembled.pages; i++) yield i; } };
  return heldDifferences(all, (i) => assembled.sha(i), (i) => base.sha(i));
}

/** The target's disk holdings: overlay blocks (`null`: all zeros) whose hash is not the base block's. */
export function heldBlocks(overlay: ReadonlyMap<number, Buffer | null>, base: BlockHashes): HeldChunks {
  const indices = [...overlay.keys()].sort((a, b) => a - b);
  return heldDifferences(indices, (i) => overlay.get(i) ?? ZERO_PAGE_SHA, (i) => base.get(i) ?? ZERO_PAGE_SHA);
}

function prefixOf(held: HeldChunks, k: number): Buffer {
  return held.prefixes.subarray(k * HELD_PREFIX_BYTES, (k + 1) * HELD_PREFIX_BYTES);
}

/** The named chunks' hash prefixes, by index. */
function prefixesByIndex(held: HeldChunks): Map<number, Buffer> {
  const named = new Map<number, Buffer>();
  held.indices.forEach((index, k) => named.set(index, prefixOf(held, k)));
  return named;
}

/** Pages read per batch while seeding (one pread per contiguous run). */
const SEED_PAGES = 256;

/**
 * Tells the source's tracker what the target holds: each page the target named is read here;
 * if it is the same as the target's, the tracker records it as held (it is not sent unless it
 * changes again), else the next scan sends it. Pages not named hold the base, as the tracker
 * starts. Safe while the guest runs: a page changed after it was read here differs from what the
 * tracker records and is sent by the next scan.
 */
export async function seedTracker(tracker: MemoryTracker, ram: FileHandle, ramBytes: number, held: HeldChunks): Promise<{ held: number; kept: number }> {
  const buf = Buffer.alloc(SEED_PAGES * BLOCK_SIZE);
  let kept = 0;
  for (let from = 0; from < held.indices.length; from += SEED_PAGES) {
    const indices = Array.from(held.indices.subarray(from, from + SEED_PAGES));
    if (indices.at(-1)! >= tracker.pages) throw new RangeError(`the target names page ${indices.at(-1)}; the VM has ${tracker.pages}`);
    await readRuns(ram, indices, buf, ramBytes);
    for (let k = 0; k < indices.length; k++) {
      const page = buf.subarray(k * BLOCK_SIZE, (k + 1) * BLOCK_SIZE);
      const sha = blockHash(page);
      const same = sha.compare(prefixOf(held, from + k), 0, HELD_PREFIX_BYTES, 0, HELD_PREFIX_BYTES) === 0;
      tracker.reconciled(indices[k]!, page, sha, same);
      if (same) kept++;
    }
  }
  return { held: held.indices.length, kept };
}

/**
 * Of the disk blocks that may differ between the two sides — the source's overlay and every
 * block the target named — those whose content here is not what the target holds (its named
 * content, else the base's), ascending.
 */
export async function blocksTargetLacks(
  overlayBlocks: Iterable<number>,
  held: HeldChunks,
  base: BlockHashes,
  readBlock: (index: number, into: Buffer) => Promise<Buffer>,
): Promise<{ lacking: number[]; kept: number }> {
  const named = prefixesByIndex(held);
  const candidates = [...new Set([...overlayBlocks, ...named.keys()])].sort((a, b) => a - b);
  const buf = Buffer.alloc(BLOCK_SIZE);
  const lacking: number[] = [];
  for (const i of candidates) {
    const there = named.get(i) ?? (base.get(i) ?? ZERO_PAGE_SHA).subarray(0, HELD_PREFIX_BYTES);
    const here = blockHash(await readBlock(i, buf));
    if (here.compare(there, 0, HELD_PREFIX_BYTES, 0, HELD_PREFIX_BYTES) !== 0) lacking.push(i);
  }
  return { lacking, kept: candidates.length - lacking.length };
}

/**
 * Keeps, of the bytes an earlier attempt in this process last sent per chunk, only those the
 * target still holds (an XOR against them is applied to its copy): a chunk the broken attempt
 * sent but the target never applied, or one it holds otherwise, is forgotten.
 */
export function keepHeldSends(
  cache: SentChunkCache,
  held: { memory: HeldChunks; disk: HeldChunks },
  base: { page: (index: number) => Buffer; block: (index: number) => Buffer },
): void {
  const memory = prefixesByIndex(held.memory);
  const disk = prefixesByIndex(held.disk);
  cache.keepWhere((space, index, bytes) => {
    const there = space === Space.Memory ? (memory.get(index) ?? base.page(index)) : (disk.get(index) ?? base.block(index));
    return blockHash(bytes).compare(there, 0, HELD_PREFIX_BYTES, 0, HELD_PREFIX_BYTES) === 0;
  });
}
