import { BLOCK_SIZE } from '../../engine/blocks.js';
import encodeBatch from '../../engine/pipeline/encode-worker.js';
import { parseModeId } from '../../engine/adaptation/mode.js';
import { RecordKind, Space, encodeRecords, type ChunkRecord } from '../../engine/pipeline/chunk-records.js';
import type { BatchHeader } from '../../engine/wire/frames.js';
import { BoundedStore, IMAGE_CHUNKS } from './bounded-store.js';
import { Draw } from './draw.js';

/** A batch as the source's encoder makes it, kept with its records before compression so a mutation can go below the codec. */
export interface ValidBatch {
  header: BatchHeader;
  payload: Buffer;
  /** The batch's records, uncompressed: what `header.rawXxh64` covers. */
  raw: Buffer;
  /** Where each record starts in `raw`: its kind byte, then space and u32 index. */
  recordStarts: number[];
}

/**
 * Every delta with every codec, a level of each: the applier's paths differ by both (xz decodes
 * on a stream, fossil deltas are parsed, xor-prev reads the target).
 */
export const CORPUS_MODES = [
  'none/none', 'xor/none', 'fossil/none',
  'none/gzip-1', 'xor/gzip-6', 'fossil/gzip-9',
  'none/zstd-1', 'xor/zstd-3', 'fossil/zstd-19',
  'none/xz-1', 'xor/xz-6', 'fossil/xz-1',
] as const;

/** One record of every kind over the small images, as the classifier makes them, with edits a delta finds small. */
function recordsFor(draw: Draw, count: number): ChunkRecord[] {
  const base = new BoundedStore();
  const chunkOf = (space: Space, index: number) => base.image(space).subarray(index * BLOCK_SIZE, (index + 1) * BLOCK_SIZE);
  const anywhere = () => {
    const space = draw.pick([Space.Memory, Space.Disk]);
    return { space, index: draw.int(0, IMAGE_CHUNKS[space] - 1) };
  };
  const edited = (from: Buffer) => {
    const data = Buffer.from(from);
    for (let k = draw.int(1, 6); k > 0; k--) data.writeUInt32LE(draw.int(0, 0xffffffff) >>> 0, draw.int(0, BLOCK_SIZE / 4 - 1) * 4);
    return data;
  };
  const records: ChunkRecord[] = [];
  for (let n = 0; n < count; n++) {
    const at = anywhere();
    const from = chunkOf(at.space, at.index);
    const ref = anywhere();
    records.push(
      draw.weighted<ChunkRecord>([
        [2, { kind: 'zero', ...at }],
        [4, { kind: 'data', ...at, data: edited(from), base: from }],
        [1, { kind: 'data', ...at, data: draw.bytes(BLOCK_SIZE), base: from }],
        [2, { kind: 'data', ...at, data: edited(from), base: from, against: 'previous' }],
        [2, { kind: 'base-ref', ...at, refSpace: ref.space, refIndex: ref.index }],
        [2, { kind: 'self-ref', ...at, refSpace: ref.space, refIndex: ref.index }],
      ]),
    );
  }
  return records;
}

export async function encodeValidBatch(modeId: string, records: ChunkRecord[]): Promise<ValidBatch> {
  const b = await encodeBatch({ modeId, records });
  const payload = Buffer.from(b.payload);
  const header: BatchHeader = { seq: 0, mode: modeId, chunks: records.length, rawBytes: b.rawBytes, rawXxh64: b.rawXxh64, payloadBytes: payload.length, payloadXxh64: b.payloadXxh64 };
  // The raw records again, as encodeBatch made them before compressing: encoding is deterministic.
  const raw = Buffer.from(encodeRecords(records, parseModeId(modeId).delta));
  return { header, payload, raw, recordStarts: recordStarts(raw) };
}

/** Batches in every corpus mode, small (a few records) to mid-sized (tens), from a fixed seed: the same corpus every run. */
export async function buildValidBatches(): Promise<ValidBatch[]> {
  const out: ValidBatch[] = [];
  for (const [m, modeId] of CORPUS_MODES.entries()) {
    for (const size of [1, 4, 24]) {
      const draw = new Draw(0x0ba7c4, m * 10 + size);
      out.push(await encodeValidBatch(modeId, recordsFor(draw, size)));
    }
  }
  return out;
}

/** A batch of `count` records of noise in one mode, for the inputs that must be large. */
export async function largeBatch(modeId: string, count: number): Promise<ValidBatch> {
  const draw = new Draw(0x1a26e, count);
  const records: ChunkRecord[] = Array.from({ length: count }, (_, n) => ({
    kind: 'data',
    space: Space.Memory,
    index: n % IMAGE_CHUNKS[Space.Memory],
    data: draw.bytes(BLOCK_SIZE),
    base: Buffer.alloc(BLOCK_SIZE),
  }));
  return encodeValidBatch(modeId, records);
}

/** Record boundaries, by the layout chunk-records.ts declares (u8 kind | u8 space | u32 index | body). */
function recordStarts(raw: Buffer): number[] {
  const starts: number[] = [];
  for (let off = 0; off < raw.length; ) {
    starts.push(off);
    const kind = raw.readUInt8(off) as RecordKind;
    off += 6;
    if (kind === RecordKind.Fossil) off += 2 + raw.readUInt16LE(off);
    else if (kind === RecordKind.BaseRef || kind === RecordKind.SelfRef) off += 5;
    else if (kind !== RecordKind.Zero) off += BLOCK_SIZE;
  }
  return starts;
}
