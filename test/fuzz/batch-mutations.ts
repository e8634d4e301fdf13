import { LEVELS, parseModeId } from '../../engine/adaptation/mode.js';
import { compressBatch } from '../../engine/pipeline/codecs.js';
import { RecordKind, Space, parseRecords } from '../../engine/pipeline/chunk-records.js';
import type { BatchHeader } from '../../engine/wire/frames.js';
import { IMAGE_CHUNKS } from './bounded-store.js';
import { mutateBytes } from './byte-mutations.js';
import type { Draw } from './draw.js';
import { mutateJsonObject } from './json-mutations.js';
import type { ValidBatch } from './valid-batches.js';
import { zstdBomb } from './zstd-bomb.js';

/** A batch as it reaches the target's decoder: its header's JSON (maybe no longer schema-valid) and its payload. */
export interface MutatedBatch {
  headerText: string;
  payload: Buffer;
  mutations: string[];
}

/**
 * Indices either side of each image's end, and the far edges of a u32: an applier that checks
 * the wrong space's limit, or `<=` for `<`, writes out of range on one of these.
 */
const EDGE_INDICES = [...new Set([0, ...Object.values(IMAGE_CHUNKS).flatMap((n) => [n - 1, n, n + 1]), 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff])];

/**
 * Below the codec, in the records: the payload is compressed again and both checksums and sizes
 * made right, as a source with a bug (or a hostile one) would send them, so the change reaches
 * the record parser and the writes rather than stopping at a checksum.
 */
async function mutateRecords(draw: Draw, batch: ValidBatch, header: BatchHeader, checksum: (d: Uint8Array) => string): Promise<{ header: BatchHeader; payload: Buffer; what: string[] }> {
  let raw: Buffer = Buffer.from(batch.raw);
  const what: string[] = [];
  for (let n = draw.int(1, 3); n > 0; n--) {
    const start = draw.pick(batch.recordStarts);
    const field = draw.weighted([
      [4, 'index'],
      [2, 'kind'],
      [2, 'space'],
      [3, 'ref'],
      [1, 'fossil-length'],
      [3, 'bytes'],
    ] as const);
    if (field === 'bytes') {
      const m = mutateBytes(draw, raw);
      raw = m.bytes;
      what.push(`records: ${m.what}`);
      continue;
    }
    if (start + 6 > raw.length) continue;
    const kind = raw.readUInt8(start);
    if (field === 'index') {
      const v = draw.pick(EDGE_INDICES);
      raw.writeUInt32LE(v, start + 2);
      what.push(`record at ${start}: index = ${v}`);
    } else if (field === 'kind') {
      const v = draw.int(0, 9);
      raw.writeUInt8(v, start);
      what.push(`record at ${start}: kind ${kind} -> ${v}`);
    } else if (field === 'space') {
      const v = draw.pick([Space.Memory, Space.Disk, 2, 255]);
      raw.writeUInt8(v, start + 1);
      what.push(`record at ${start}: space = ${v}`);
    } else if (field === 'ref' && (kind === RecordKind.BaseRef || kind === RecordKind.SelfRef) && start + 11 <= raw.length) {
      const space = draw.pick([Space.Memory, Space.Disk, 2]);
      const v = draw.pick(EDGE_INDICES);
      raw.writeUInt8(space, start + 6);
      raw.writeUInt32LE(v, start + 7);
      what.push(`record at ${start}: reference = space ${space} index ${v}`);
    } else if (field === 'fossil-length' && kind === RecordKind.Fossil && start + 8 <= raw.length) {
      const v = draw.pick([0, 1, 2, 0xffff, raw.readUInt16LE(start + 6) + 1, raw.readUInt16LE(start + 6) - 1]) & 0xffff;
      raw.writeUInt16LE(v, start + 6);
      what.push(`record at ${start}: fossil delta length = ${v}`);
    }
  }
  const mode = parseModeId(header.mode);
  // The lowest level of the codec: the target decodes any level alike, and xz-9 or zstd-19 would cost the case its time.
  const payload = await compressBatch(mode.codec, LEVELS[mode.codec][0]!, raw);
  let chunks = header.chunks;
  try {
    chunks = parseRecords(raw).length;
  } catch {
    // Unparseable now: the header keeps its count and the parser's refusal is what is tested.
  }
  return {
    header: { ...header, chunks: Math.min(4096, Math.max(1, chunks)), rawBytes: raw.length, rawXxh64: checksum(raw), payloadBytes: payload.length, payloadXxh64: checksum(payload) },
    payload,
    what,
  };
}

/** Changes to one valid batch at one of its layers: records, compressed payload, header, or a bomb in place of the payload. */
export async function mutateBatch(draw: Draw, batch: ValidBatch, checksum: (d: Uint8Array) => string): Promise<MutatedBatch> {
  let header: BatchHeader = { ...batch.header, seq: draw.pick([0, 0, 0, 1, 7]) };
  let payload = batch.payload;
  const mutations: string[] = [];
  const layers = draw.weighted([
    [1, 0],
    [5, 1],
    [2, 2],
  ] as const);
  const picked = Array.from({ length: layers }, () =>
    draw.weighted([
      [5, 'records'],
      [3, 'payload'],
      [3, 'header'],
      [1, 'bomb'],
    ] as const),
  );
  for (const layer of picked) {
    if (layer === 'records') {
      const m = await mutateRecords(draw, batch, header, checksum);
      ({ header, payload } = m);
      mutations.push(...m.what);
    } else if (layer === 'payload') {
      // The compressed bytes changed and checksummed again: garbage the codec itself must refuse.
      const m = mutateBytes(draw, payload);
      payload = m.bytes;
      header = { ...header, payloadBytes: payload.length, payloadXxh64: draw.chance(0.9) ? checksum(payload) : header.payloadXxh64 };
      mutations.push(`payload: ${m.what}`);
    } else if (layer === 'bomb') {
      const bytes = draw.pick([header.rawBytes + 1, 16 << 20, 1 << 30]);
      payload = zstdBomb(bytes, draw.chance(0.5));
      const delta = header.mode.split('/')[0];
      header = { ...header, mode: `${delta}/zstd-1`, payloadBytes: payload.length, payloadXxh64: checksum(payload) };
      mutations.push(`payload = zstd inflating to ${bytes} bytes, header rawBytes ${header.rawBytes}`);
    }
  }
  // Header edits last: they are the JSON as sent, after every change below them.
  let headerText = JSON.stringify(header);
  for (let n = picked.filter((l) => l === 'header').length; n > 0; n--) {
    const m = mutateJsonObject(draw, headerText);
    headerText = m.text;
    mutations.push(`header: ${m.what}`);
  }
  return { headerText, payload, mutations };
}

/** The batch frame's payload as the decoder hands it to decodePayload: `u32 header length | header | payload`. */
export function batchFramePayload(b: MutatedBatch): Buffer {
  const header = Buffer.from(b.headerText);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(header.length, 0);
  return Buffer.concat([len, header, b.payload]);
}
