import type { FileHandle } from 'node:fs/promises';
import { BLOCK_SIZE } from '../blocks.js';
import type { DiskBlocks } from '../disk/disk-blocks.js';
import { Space } from './chunk-records.js';

/** Reads chunks of one side's memory and disk by (space, index). */
export interface ChunkReader {
  /** Reads the chunks at `indices` (ascending) of `space` into `into`, back to back. */
  read(space: Space, indices: number[], into: Buffer): Promise<void>;
}

/** Reads runs of consecutive indices with one pread each. */
export async function readRuns(file: FileHandle, indices: number[], into: Buffer, sizeBytes: number): Promise<void> {
  let k = 0;
  while (k < indices.length) {
    let end = k + 1;
    while (end < indices.length && indices[end] === indices[end - 1]! + 1) end++;
    const pos = indices[k]! * BLOCK_SIZE;
    const want = Math.min((end - k) * BLOCK_SIZE, Math.max(0, sizeBytes - pos));
    const { bytesRead } = await file.read(into, k * BLOCK_SIZE, want, pos);
    into.fill(0, k * BLOCK_SIZE + bytesRead, end * BLOCK_SIZE);
    k = end;
  }
}

/** The source VM now: its RAM file and its disk (base + overlay). */
export function vmChunkReader(ram: FileHandle, ramBytes: number, disk: Pick<DiskBlocks, 'readBlock'>): ChunkReader {
  return {
    async read(space, indices, into) {
      if (space === Space.Memory) return readRuns(ram, indices, into, ramBytes);
      for (const [n, index] of indices.entries()) await disk.readBlock(index, into.subarray(n * BLOCK_SIZE, (n + 1) * BLOCK_SIZE));
    },
  };
}

/** The base image: memory snapshot and disk, as both sides hold them. */
export function baseChunkReader(memory: FileHandle, memoryBytes: number, disk: FileHandle, diskBytes: number): ChunkReader {
  return {
    read: (space, indices, into) =>
      space === Space.Memory ? readRuns(memory, indices, into, memoryBytes) : readRuns(disk, indices, into, diskBytes),
  };
}
