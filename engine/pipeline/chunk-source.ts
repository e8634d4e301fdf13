import { readSync } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { BLOCK_SIZE } from '../blocks.js';
import type { DiskBlocks } from '../disk/disk-blocks.js';
import { Space } from './chunk-records.js';

/** Reads chunks of one side's memory and disk by (space, index). */
export interface ChunkReader {
  /** Reads the chunks at `indices` (ascending) of `space` into `into`, back to back. */
  read(space: Space, indices: number[], into: Buffer): Promise<void>;
}

/** Runs of consecutive indices: positions [from, to) in `indices`. */
function* runsOf(indices: number[]): Generator<{ from: number; to: number }> {
  let from = 0;
  while (from < indices.length) {
    let to = from + 1;
    while (to < indices.length && indices[to] === indices[to - 1]! + 1) to++;
    yield { from, to };
    from = to;
  }
}

/** Reads runs of consecutive indices with one pread each. */
export async function readRuns(file: FileHandle, indices: number[], into: Buffer, sizeBytes: number): Promise<void> {
  for (const { from, to } of runsOf(indices)) {
    const pos = indices[from]! * BLOCK_SIZE;
    const want = Math.min((to - from) * BLOCK_SIZE, Math.max(0, sizeBytes - pos));
    const { bytesRead } = await file.read(into, from * BLOCK_SIZE, want, pos);
    into.fill(0, from * BLOCK_SIZE + bytesRead, to * BLOCK_SIZE);
  }
}

/**
 * The same for a VM's RAM file, read in place rather than through the I/O pool: the file is on
 * tmpfs, so a pread is a page copy of microseconds, while a pool trip per run (a stopped epoch's
 * pages are scattered: a run each) queues behind every other trip of the process and costs tens
 * of microseconds to milliseconds on a loaded host — on the stopped VM's path.
 */
export function readRamRuns(ram: FileHandle, indices: number[], into: Buffer, sizeBytes: number): void {
  for (const { from, to } of runsOf(indices)) {
    const pos = indices[from]! * BLOCK_SIZE;
    const want = Math.min((to - from) * BLOCK_SIZE, Math.max(0, sizeBytes - pos));
    const bytesRead = want > 0 ? readSync(ram.fd, into, from * BLOCK_SIZE, want, pos) : 0;
    into.fill(0, from * BLOCK_SIZE + bytesRead, to * BLOCK_SIZE);
  }
}

/** The source VM now: its RAM file and its disk (base + overlay). */
export function vmChunkReader(ram: FileHandle, ramBytes: number, disk: Pick<DiskBlocks, 'readBlock'>): ChunkReader {
  return {
    async read(space, indices, into) {
      if (space === Space.Memory) return readRamRuns(ram, indices, into, ramBytes);
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
