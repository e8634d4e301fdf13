import { applyDelta, createDelta } from 'fossil-delta';
import { BLOCK_SIZE } from '../blocks.js';
import type { Delta } from '../adaptation/mode.js';

/**
 * The records of one batch, before compression. Each 4 KiB chunk of the overlay becomes one:
 *   zero      the chunk is all zeros
 *   raw       the bytes as they are
 *   xor       chunk XOR the base chunk at the same offset (mostly zeros where little changed)
 *   fossil    a binary delta (copy/insert, Fossil's format) from the base chunk at the same offset
 *   base-ref  equal to a chunk of the base image (memory or disk, any offset)
 *   self-ref  equal to a chunk sent earlier in this overlay
 *   xor-prev  chunk XOR the target's current chunk at the same offset: what this overlay sent
 *             for it before (a chunk sent again, see SentChunkCache)
 * Layout: u8 kind | u8 space | u32 index | body. Little-endian.
 */
export enum Space {
  Memory = 0,
  Disk = 1,
}

/** One number for a chunk's (space, index), as a Map key: exact, indices are below 2³². */
export const chunkKey = (space: Space, index: number): number => space * 2 ** 32 + index;
export const chunkOfKey = (key: number): { space: Space; index: number } => ({ space: Math.floor(key / 2 ** 32) as Space, index: key % 2 ** 32 });

export enum RecordKind {
  Zero = 0,
  Raw = 1,
  Xor = 2,
  Fossil = 3,
  BaseRef = 4,
  SelfRef = 5,
  XorPrevious = 6,
}

export type ChunkRecord =
  | { kind: 'zero'; space: Space; index: number }
  /**
   * `base` is the base chunk at the same offset, for delta encoding (zeros past the base) — or,
   * with `against: 'previous'`, the bytes this overlay last sent for the chunk, which the target
   * holds: then the record is their XOR whatever the mode's delta.
   */
  | { kind: 'data'; space: Space; index: number; data: Uint8Array; base: Uint8Array; against?: 'previous' }
  | { kind: 'base-ref'; space: Space; index: number; refSpace: Space; refIndex: number }
  | { kind: 'self-ref'; space: Space; index: number; refSpace: Space; refIndex: number };

const HEAD = 6;

export function encodeRecords(records: ChunkRecord[], delta: Delta): Uint8Array {
  const parts: Uint8Array[] = [];
  let size = 0;
  const push = (p: Uint8Array) => {
    parts.push(p);
    size += p.length;
  };
  for (const r of records) {
    const head = Buffer.alloc(HEAD);
    head.writeUInt8(r.space, 1);
    head.writeUInt32LE(r.index, 2);
    if (r.kind === 'zero') {
      head.writeUInt8(RecordKind.Zero, 0);
      push(head);
    } else if (r.kind === 'base-ref' || r.kind === 'self-ref') {
      head.writeUInt8(r.kind === 'base-ref' ? RecordKind.BaseRef : RecordKind.SelfRef, 0);
      const ref = Buffer.alloc(5);
      ref.writeUInt8(r.refSpace, 0);
      ref.writeUInt32LE(r.refIndex, 1);
      push(head);
      push(ref);
    } else if (r.against === 'previous' || delta === 'xor') {
      head.writeUInt8(r.against === 'previous' ? RecordKind.XorPrevious : RecordKind.Xor, 0);
      const x = Buffer.alloc(BLOCK_SIZE);
      for (let i = 0; i < BLOCK_SIZE; i++) x[i] = r.data[i]! ^ r.base[i]!;
      push(head);
      push(x);
    } else if (delta === 'fossil') {
      const d = createDelta(r.base, r.data);
      if (d.length + 2 < BLOCK_SIZE) {
        head.writeUInt8(RecordKind.Fossil, 0);
        const len = Buffer.alloc(2);
        len.writeUInt16LE(d.length, 0);
        push(head);
        push(len);
        push(d);
      } else {
        head.writeUInt8(RecordKind.Raw, 0);
        push(head);
        push(r.data);
      }
    } else {
      head.writeUInt8(RecordKind.Raw, 0);
      push(head);
      push(r.data);
    }
  }
  const out = new Uint8Array(size);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** A parsed record, its body still relative to what the target holds. */
export type ParsedRecord =
  | { kind: RecordKind.Zero; space: Space; index: number }
  | { kind: RecordKind.Raw | RecordKind.Xor | RecordKind.Fossil | RecordKind.XorPrevious; space: Space; index: number; body: Buffer }
  | { kind: RecordKind.BaseRef | RecordKind.SelfRef; space: Space; index: number; refSpace: Space; refIndex: number };

export class RecordFormatError extends Error {}

export function parseRecords(raw: Buffer): ParsedRecord[] {
  const out: ParsedRecord[] = [];
  let off = 0;
  const need = (n: number, what: string) => {
    if (off + n > raw.length) throw new RecordFormatError(`batch truncated inside ${what} at byte ${off}`);
  };
  while (off < raw.length) {
    need(HEAD, 'a record header');
    const kind = raw.readUInt8(off);
    const space = raw.readUInt8(off + 1);
    const index = raw.readUInt32LE(off + 2);
    if (space !== Space.Memory && space !== Space.Disk) throw new RecordFormatError(`record at byte ${off}: unknown space ${space}`);
    off += HEAD;
    switch (kind) {
      case RecordKind.Zero:
        out.push({ kind, space, index });
        break;
      case RecordKind.Raw:
      case RecordKind.Xor:
      case RecordKind.XorPrevious:
        need(BLOCK_SIZE, 'a chunk');
        out.push({ kind, space, index, body: raw.subarray(off, off + BLOCK_SIZE) });
        off += BLOCK_SIZE;
        break;
      case RecordKind.Fossil: {
        need(2, 'a delta length');
        const len = raw.readUInt16LE(off);
        off += 2;
        need(len, 'a delta');
        out.push({ kind, space, index, body: raw.subarray(off, off + len) });
        off += len;
        break;
      }
      case RecordKind.BaseRef:
      case RecordKind.SelfRef: {
        need(5, 'a reference');
        const refSpace = raw.readUInt8(off);
        if (refSpace !== Space.Memory && refSpace !== Space.Disk) throw new RecordFormatError(`reference at byte ${off}: unknown space ${refSpace}`);
        out.push({ kind, space, index, refSpace, refIndex: raw.readUInt32LE(off + 1) });
        off += 5;
        break;
      }
      default:
        throw new RecordFormatError(`record at byte ${off - HEAD}: unknown kind ${kind}`);
    }
  }
  return out;
}

/**
 * The chunk a delta record stands for, given the chunk it is relative to: the base chunk at its
 * offset, or for xor-prev the target's current chunk there.
 */
export function undelta(kind: RecordKind.Raw | RecordKind.Xor | RecordKind.Fossil | RecordKind.XorPrevious, body: Buffer, base: Buffer): Buffer {
  if (kind === RecordKind.Raw) return body;
  if (kind === RecordKind.Xor || kind === RecordKind.XorPrevious) {
    const out = Buffer.alloc(BLOCK_SIZE);
    for (let i = 0; i < BLOCK_SIZE; i++) out[i] = body[i]! ^ base[i]!;
    return out;
  }
  const out = Buffer.from(applyDelta(base, body, { verifyChecksum: true }));
  if (out.length !== BLOCK_SIZE) throw new RecordFormatError(`delta produced ${out.length} bytes, not a ${BLOCK_SIZE}-byte chunk`);
  return out;
}
