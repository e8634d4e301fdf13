import { BLOCK_SIZE } from '../../engine/blocks.js';
import type { ChunkStore } from '../../engine/pipeline/batch-applier.js';
import { Space } from '../../engine/pipeline/chunk-records.js';

/**
 * The fuzzed target's memory and disk: small, so that indices a mutation makes up land past the
 * end more often than not, and every index the applier passes on is checked here, not trusted.
 */
export const IMAGE_CHUNKS: Readonly<Record<Space, number>> = { [Space.Memory]: 48, [Space.Disk]: 16 };

/**
 * A ChunkStore over two buffers that refuses, and records, any access outside its images: a
 * write or read past `limit(space)`, of a space that does not exist, of a chunk that is not 4 KiB.
 * The applier is meant to stop all of these before they reach a store; a real store (a tmpfs
 * file, the VM host) would carry them out, so each one recorded here is a finding.
 */
export class BoundedStore implements ChunkStore {
  readonly violations: string[] = [];
  private readonly images: Record<Space, Buffer>;

  /** Starts as a copy of `from`'s images (the target assembles on top of the base). */
  constructor(from?: BoundedStore) {
    this.images = {
      [Space.Memory]: Buffer.from(from?.images[Space.Memory] ?? BASE[Space.Memory]),
      [Space.Disk]: Buffer.from(from?.images[Space.Disk] ?? BASE[Space.Disk]),
    };
  }

  limit(space: Space): number {
    return IMAGE_CHUNKS[space] ?? 0;
  }

  async writeRun(space: Space, first: number, chunks: Buffer[]): Promise<void> {
    if (!this.inRange('write', space, first, chunks.length)) return;
    for (const [k, chunk] of chunks.entries()) {
      if (chunk.length !== BLOCK_SIZE) {
        this.violations.push(`write of a ${chunk.length}-byte chunk at ${Space[space]} ${first + k}`);
        return;
      }
    }
    chunks.forEach((chunk, k) => chunk.copy(this.images[space], (first + k) * BLOCK_SIZE));
  }

  async read(space: Space, indices: number[], into: Buffer): Promise<void> {
    if (into.length < indices.length * BLOCK_SIZE) {
      this.violations.push(`read of ${indices.length} chunks into ${into.length} bytes`);
      return;
    }
    for (const [n, index] of indices.entries()) {
      if (!this.inRange('read', space, index, 1)) return;
      this.images[space].copy(into, n * BLOCK_SIZE, index * BLOCK_SIZE, (index + 1) * BLOCK_SIZE);
    }
  }

  /** The image's bytes, for comparing what two applications left. */
  image(space: Space): Buffer {
    return this.images[space];
  }

  private inRange(what: 'read' | 'write', space: Space, first: number, count: number): boolean {
    const limit = IMAGE_CHUNKS[space];
    if (limit === undefined) this.violations.push(`${what} in unknown space ${String(space)}`);
    else if (!Number.isInteger(first) || first < 0 || first + count > limit) this.violations.push(`${what} of ${Space[space]} chunks ${first}..${first + count - 1}, past the ${limit} there are`);
    else return true;
    return false;
  }
}

/** The base both sides hold: every chunk distinct (its index written through it), a few all zeros. */
function baseImage(space: Space): Buffer {
  const image = Buffer.alloc(IMAGE_CHUNKS[space] * BLOCK_SIZE);
  for (let i = 0; i < IMAGE_CHUNKS[space]; i++) {
    if (i % 5 === 4) continue;
    for (let off = 0; off < BLOCK_SIZE; off += 4) image.writeUInt32LE((Math.imul((space << 16) + i + 1, 0x9e3779b1) ^ off) >>> 0, i * BLOCK_SIZE + off);
  }
  return image;
}

const BASE: Readonly<Record<Space, Buffer>> = { [Space.Memory]: baseImage(Space.Memory), [Space.Disk]: baseImage(Space.Disk) };
