import { performance } from 'node:perf_hooks';
import { parseModeId } from '../adaptation/mode.js';
import { compressBatch } from './codecs.js';
import { encodeRecords, type ChunkRecord } from './chunk-records.js';
import { loadChecksum, loadHash64 } from './checksum.js';
import { changedShare, type ChangedShareTask } from '../memory/memory-tracker.js';
import { blockHashRecords } from '../image/image-digest.js';
import { hashPageRuns, type PageRunsTask } from '../memory/page-hash-table.js';

/** One batch for a pool thread: delta-encode its chunks, compress, checksum. */
export interface EncodeTask {
  modeId: string;
  records: ChunkRecord[];
}

export interface EncodedPayload {
  modeId: string;
  payload: Uint8Array;
  rawBytes: number;
  rawXxh64: string;
  payloadXxh64: string;
  /** Wall time this thread spent on the batch: the P measurement's denominator. */
  busyMs: number;
}

export default async function encodeBatch(task: EncodeTask): Promise<EncodedPayload> {
  const started = performance.now();
  const mode = parseModeId(task.modeId);
  const checksum = await loadChecksum();
  const raw = encodeRecords(task.records, mode.delta);
  const payload = await compressBatch(mode.codec, mode.level, raw);
  return {
    modeId: task.modeId,
    payload,
    rawBytes: raw.length,
    rawXxh64: checksum(raw),
    payloadXxh64: checksum(payload),
    busyMs: performance.now() - started,
  };
}

/** A share of a whole-file digest, on a pool thread (see CodecPool.digestFile). */
export async function digestShare(task: { path: string; sizeBytes: number; from: number; to: number }): Promise<Uint8Array> {
  return blockHashRecords(task.path, task.sizeBytes, task.from, task.to);
}

/** A share of a changed-pages scan, on a pool thread (see MemoryTracker.changedPagesOnPool). */
export async function changedPagesShare(task: ChangedShareTask): Promise<Uint32Array> {
  return changedShare(task, await loadHash64());
}

/** Pages of a file hashed into a shared table, on a pool thread (see AssembledMemoryDigest). */
export async function pageRunsShare(task: PageRunsTask): Promise<number> {
  return hashPageRuns(task, task.xxh64 ? await loadHash64() : undefined);
}
