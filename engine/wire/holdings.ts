import { HandoffError } from '../errors.js';

/**
 * Bytes of a chunk's SHA-256 the target names it by in its holdings. A wrong match on 8 bytes
 * is no risk to the VM, only to the handoff: the source then believes the target holds a page it
 * does not, and the assembled state fails the stop-time digest check (full SHA-256 from the real
 * bytes on both sides) before anything resumes.
 */
export const HELD_PREFIX_BYTES = 8;

/** The chunks of one space (memory or disk) the target holds with content other than the base's. */
export interface HeldChunks {
  /** Ascending chunk indices. */
  indices: Uint32Array;
  /** The first HELD_PREFIX_BYTES of each chunk's SHA-256, in the order of `indices`. */
  prefixes: Buffer;
}

/**
 * What a target already assembled of a handoff, sent to a reconnecting source (attempt > 1) so
 * that the stream goes on with only what is missing or changed: every memory page and disk block
 * whose content differs from the base, by index and hash prefix. Everything not named holds the
 * base's content.
 */
export interface Holdings {
  memory: HeldChunks;
  disk: HeldChunks;
}

const RECORD_BYTES = 4 + HELD_PREFIX_BYTES;

export function emptyHeld(): HeldChunks {
  return { indices: new Uint32Array(0), prefixes: Buffer.alloc(0) };
}

/** The size of a holdings frame's payload. */
export function encodedHoldingsBytes(h: Holdings): number {
  return 8 + (h.memory.indices.length + h.disk.indices.length) * RECORD_BYTES;
}

/** `u32 count | count × (u32 index, prefix)` for memory, then the same for the disk. */
export function encodeHoldings(h: Holdings): Buffer {
  const spaces = [h.memory, h.disk];
  const out = Buffer.alloc(spaces.reduce((n, s) => n + 4 + s.indices.length * RECORD_BYTES, 0));
  let off = 0;
  for (const s of spaces) {
    if (s.prefixes.length !== s.indices.length * HELD_PREFIX_BYTES) throw new Error(`held chunks: ${s.indices.length} indices but ${s.prefixes.length} prefix bytes`);
    out.writeUInt32LE(s.indices.length, off);
    off += 4;
    for (let k = 0; k < s.indices.length; k++) {
      out.writeUInt32LE(s.indices[k]!, off);
      s.prefixes.copy(out, off + 4, k * HELD_PREFIX_BYTES, (k + 1) * HELD_PREFIX_BYTES);
      off += RECORD_BYTES;
    }
  }
  return out;
}

export function decodeHoldings(payload: Buffer): Holdings {
  let off = 0;
  const space = (name: string): HeldChunks => {
    if (off + 4 > payload.length) throw new HandoffError('PROTOCOL', `holdings frame: the ${name} count is truncated`);
    const count = payload.readUInt32LE(off);
    off += 4;
    if (off + count * RECORD_BYTES > payload.length) throw new HandoffError('PROTOCOL', `holdings frame: ${count} ${name} records run past the frame`);
    const indices = new Uint32Array(count);
    const prefixes = Buffer.alloc(count * HELD_PREFIX_BYTES);
    for (let k = 0; k < count; k++) {
      indices[k] = payload.readUInt32LE(off);
      if (k > 0 && indices[k]! <= indices[k - 1]!) throw new HandoffError('PROTOCOL', `holdings frame: ${name} index ${indices[k]} is not above ${indices[k - 1]}`);
      payload.copy(prefixes, k * HELD_PREFIX_BYTES, off + 4, off + RECORD_BYTES);
      off += RECORD_BYTES;
    }
    return { indices, prefixes };
  };
  const memory = space('memory');
  const disk = space('disk');
  if (off !== payload.length) throw new HandoffError('PROTOCOL', `holdings frame: ${payload.length - off} bytes after the disk records`);
  return { memory, disk };
}
