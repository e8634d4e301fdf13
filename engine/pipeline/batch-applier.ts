import { BLOCK_SIZE } from '../blocks.js';
import { HandoffError } from '../errors.js';
import { parseModeId } from '../adaptation/mode.js';
import type { BatchHeader } from '../wire/frames.js';
import { decompressBatch } from './codecs.js';
import { RecordFormatError, RecordKind, Space, parseRecords, undelta } from './chunk-records.js';
import type { ChunkReader } from './chunk-source.js';
import { loadChecksum } from './checksum.js';

/** The target's memory and disk under assembly. */
export interface ChunkStore extends ChunkReader {
  /** Writes consecutive chunks `first`, `first + 1`, … in one go (one syscall for memory). */
  writeRun(space: Space, first: number, chunks: Buffer[]): Promise<void>;
  /** Chunks in each space: indices at or past it are refused. */
  limit(space: Space): number;
  /** Called once every write of a batch is made: a store that reports its writes elsewhere (to a VM host) does so once per batch, here. */
  batchWritten?(): Promise<void>;
}

/**
 * Checks one received batch (both checksums), decompresses it and writes its chunks: references
 * and deltas resolve against the base or against chunks this overlay wrote before (batches are
 * applied one at a time, in order). Returns chunks applied.
 */
export async function applyBatch(header: BatchHeader, payload: Buffer, store: ChunkStore, base: ChunkReader): Promise<number> {
  const checksum = await loadChecksum();
  const fail = (what: string) => new HandoffError('STATE_MISMATCH', `batch ${header.seq}: ${what}`);
  if (checksum(payload) !== header.payloadXxh64) throw fail('payload checksum does not match its header (corrupted in transit)');
  const mode = parseModeId(header.mode);
  let raw: Buffer;
  try {
    raw = await decompressBatch(mode.codec, payload, header.rawBytes);
  } catch (err) {
    throw fail(`does not decompress as ${mode.codec}: ${(err as Error).message}`);
  }
  if (checksum(raw) !== header.rawXxh64) throw fail('decompressed content checksum does not match its header');
  let records;
  try {
    records = parseRecords(raw);
  } catch (err) {
    if (err instanceof RecordFormatError) throw fail(err.message);
    throw err;
  }
  if (records.length !== header.chunks) throw fail(`holds ${records.length} chunks, header says ${header.chunks}`);
  const scratch = Buffer.alloc(BLOCK_SIZE);
  const inRange = (space: Space, index: number) => {
    if (index >= store.limit(space)) throw fail(`${Space[space].toLowerCase()} chunk ${index} is past the image's ${store.limit(space)} chunks`);
  };
  // Epochs list chunks in ascending order, so most of a batch is a few contiguous runs: written
  // as runs, the target keeps up with the link instead of trailing it by one syscall per chunk.
  let run: { space: Space; first: number; chunks: Buffer[] } | undefined;
  const flush = async () => {
    if (run) await store.writeRun(run.space, run.first, run.chunks);
    run = undefined;
  };
  const write = async (space: Space, index: number, chunk: Buffer) => {
    if (run && run.space === space && run.first + run.chunks.length === index) {
      run.chunks.push(chunk);
      return;
    }
    await flush();
    run = { space, first: index, chunks: [chunk] };
  };
  for (const r of records) {
    inRange(r.space, r.index);
    switch (r.kind) {
      case RecordKind.Zero:
        await write(r.space, r.index, Buffer.alloc(BLOCK_SIZE));
        break;
      case RecordKind.Raw:
        await write(r.space, r.index, Buffer.from(r.body));
        break;
      case RecordKind.Xor:
      case RecordKind.Fossil:
      case RecordKind.XorPrevious: {
        if (r.kind === RecordKind.XorPrevious) {
          // Relative to what this target holds there now: an earlier batch wrote it.
          if (run && run.space === r.space && r.index >= run.first && r.index < run.first + run.chunks.length) await flush();
          await store.read(r.space, [r.index], scratch);
        } else {
          await base.read(r.space, [r.index], scratch);
        }
        let chunk: Buffer;
        try {
          chunk = undelta(r.kind, r.body, scratch);
        } catch (err) {
          throw fail(`chunk ${r.index}: ${(err as Error).message}`);
        }
        await write(r.space, r.index, Buffer.from(chunk));
        break;
      }
      case RecordKind.BaseRef:
      case RecordKind.SelfRef: {
        inRange(r.refSpace, r.refIndex);
        const from = r.kind === RecordKind.BaseRef ? base : store;
        // A self-reference may name a chunk of the run not yet written.
        if (from === store) await flush();
        const chunk = Buffer.alloc(BLOCK_SIZE);
        await from.read(r.refSpace, [r.refIndex], chunk);
        await write(r.space, r.index, chunk);
        break;
      }
    }
  }
  await flush();
  await store.batchWritten?.();
  return records.length;
}
