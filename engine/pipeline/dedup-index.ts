import { BLOCK_SIZE } from '../blocks.js';
import { isZeroBlock } from '../image/image-digest.js';
import { loadHash64 } from './checksum.js';
import { Space, chunkKey, chunkOfKey, type ChunkRecord } from './chunk-records.js';
import type { ChunkReader } from './chunk-source.js';

export interface ChunkRef {
  space: Space;
  index: number;
}

/**
 * Chunks of the overlay itself remembered for self-references. Bounded (oldest forgotten first)
 * so that the source's memory does not grow with the overlay: 256 Ki chunks cover the last
 * 1 GiB of distinct content in about 30 MB.
 */
export const SELF_INDEX_CAPACITY = 256 * 1024;

const pack = (r: ChunkRef) => chunkKey(r.space, r.index);

/**
 * Where a chunk's content already is: in the base image (memory or disk, any offset) or earlier in
 * this overlay. Keyed by a 64-bit xxHash, which only nominates a candidate: `classify` confirms
 * every match by comparing bytes before it becomes a reference.
 */
export class DedupIndex {
  private readonly self = new Map<bigint, number>();

  private constructor(
    private readonly base: Map<bigint, number>,
    private readonly hash: (d: Uint8Array) => bigint,
    /** Off while the VM runs: the bytes behind a self-reference could change under it. */
    private readonly selfRefs = true,
  ) {}

  /** Indexes the base's non-zero memory pages and disk blocks. `hash` is xxHash64 unless a test forces collisions. */
  static async build(base: ChunkReader, memoryPages: number, diskBlocks: Iterable<number>, hashFn?: (d: Uint8Array) => bigint): Promise<DedupIndex> {
    const hash = hashFn ?? (await loadHash64());
    const index = new Map<bigint, number>();
    const add = (space: Space, indices: number[], buf: Buffer) => {
      indices.forEach((i, n) => {
        const chunk = buf.subarray(n * BLOCK_SIZE, (n + 1) * BLOCK_SIZE);
        if (isZeroBlock(chunk)) return;
        const h = hash(chunk);
        if (!index.has(h)) index.set(h, pack({ space, index: i }));
      });
    };
    const run = 1024;
    const buf = Buffer.alloc(run * BLOCK_SIZE);
    for (let start = 0; start < memoryPages; start += run) {
      const indices = Array.from({ length: Math.min(run, memoryPages - start) }, (_, k) => start + k);
      await base.read(Space.Memory, indices, buf);
      add(Space.Memory, indices, buf);
    }
    const disk = [...diskBlocks].sort((a, b) => a - b);
    for (let k = 0; k < disk.length; k += run) {
      const indices = disk.slice(k, k + run);
      await base.read(Space.Disk, indices, buf);
      add(Space.Disk, indices, buf);
    }
    return new DedupIndex(index, hash);
  }

  get baseEntries(): number {
    return this.base.size;
  }

  /** A fresh index over the same base, for another overlay (or another pre-copy epoch). */
  forOverlay(opts: { selfRefs?: boolean } = {}): DedupIndex {
    return new DedupIndex(this.base, this.hash, opts.selfRefs ?? true);
  }

  /**
   * Turns chunk `ref` with content `data` into a record: zero, a confirmed reference, or data to
   * be delta-encoded against `sameOffsetBase`. `source` and `baseReader` supply bytes to confirm.
   * A self-reference is confirmed against the source's bytes now, which equal what was sent only
   * while the VM is paused: live pre-copy epochs use an index without self-references.
   */
  async classify(
    ref: ChunkRef,
    data: Buffer,
    sameOffsetBase: Buffer,
    source: ChunkReader,
    baseReader: ChunkReader,
  ): Promise<ChunkRecord> {
    if (isZeroBlock(data)) return { kind: 'zero', ...ref };
    const h = this.hash(data);
    const scratch = Buffer.alloc(BLOCK_SIZE);
    const inBase = this.base.get(h);
    if (inBase !== undefined) {
      const at = chunkOfKey(inBase);
      await baseReader.read(at.space, [at.index], scratch);
      if (scratch.equals(data)) return { kind: 'base-ref', ...ref, refSpace: at.space, refIndex: at.index };
    }
    const earlier = this.selfRefs ? this.self.get(h) : undefined;
    if (earlier !== undefined) {
      const at = chunkOfKey(earlier);
      await source.read(at.space, [at.index], scratch);
      if (scratch.equals(data)) return { kind: 'self-ref', ...ref, refSpace: at.space, refIndex: at.index };
    }
    if (this.selfRefs) {
      this.self.set(h, pack(ref));
      if (this.self.size > SELF_INDEX_CAPACITY) this.self.delete(this.self.keys().next().value!);
    }
    return { kind: 'data', ...ref, data: Buffer.from(data), base: Buffer.from(sameOffsetBase) };
  }
}
