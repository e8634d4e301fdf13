import { FrameType, HELLO_MAX_FRAME_BYTES, MAX_FRAME_BYTES } from '../../engine/wire/frames.js';
import { EDGE_U32 } from './byte-mutations.js';
import type { Draw } from './draw.js';
import { mutateJsonObject } from './json-mutations.js';
import { zstdBomb } from './zstd-bomb.js';

/** A stream's frames as bytes, each `u32 length | u8 type | payload`, with their types as sent. */
export interface FrameList {
  frames: Buffer[];
  types: FrameType[];
}

/**
 * Bomb sizes: small ones a bounded receiver takes in stride, and one past the run's memory bound,
 * which only a receiver that inflates without a limit holds in full.
 */
const BOMB_BYTES = [16 << 20, 256 << 20, 1280 << 20] as const;

const reframe = (type: number, payload: Buffer): Buffer => {
  const head = Buffer.alloc(5);
  head.writeUInt32LE(payload.length + 1, 0);
  head.writeUInt8(type, 4);
  return Buffer.concat([head, payload]);
};

/** A batch frame's parts, if its header length still fits its frame. */
function batchParts(frame: Buffer): { header: Buffer; body: Buffer } | undefined {
  if (frame.length < 9) return undefined;
  const headerLength = frame.readUInt32LE(5);
  if (9 + headerLength > frame.length) return undefined;
  return { header: frame.subarray(9, 9 + headerLength), body: frame.subarray(9 + headerLength) };
}

function batchFrameOf(header: Buffer, body: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32LE(header.length, 0);
  return reframe(FrameType.Batch, Buffer.concat([len, header, body]));
}

/**
 * One change that knows the framing: a frame repeated, dropped, moved or borrowed from another
 * stream; a length or type byte set to an edge; a JSON field set past its bound; a compressed
 * payload swapped for a bomb. Returns what it did.
 */
export function mutateFrames(draw: Draw, list: FrameList, donors: FrameList[], checksum: (data: Uint8Array) => string): string {
  const { frames, types } = list;
  const any = () => draw.int(0, Math.max(0, frames.length - 1));
  const ofType = (...wanted: FrameType[]) => {
    const at = types.flatMap((t, i) => (wanted.includes(t) ? [i] : []));
    return at.length ? draw.pick(at) : undefined;
  };
  const op = draw.weighted([
    [3, 'duplicate'],
    [2, 'drop'],
    [2, 'swap'],
    [2, 'splice'],
    [4, 'length'],
    [2, 'type'],
    [6, 'batch-json'],
    [2, 'batch-header-length'],
    [4, 'control-json'],
    [2, 'bomb-device-state'],
    [1, 'bomb-batch'],
  ] as const);
  if (frames.length === 0) return 'frame edit skipped (no frames)';
  switch (op) {
    case 'duplicate': {
      const i = any();
      frames.splice(i + 1, 0, frames[i]!);
      types.splice(i + 1, 0, types[i]!);
      return `duplicate frame ${i} (type ${types[i]})`;
    }
    case 'drop': {
      const i = any();
      frames.splice(i, 1);
      const [t] = types.splice(i, 1);
      return `drop frame ${i} (type ${t})`;
    }
    case 'swap': {
      const i = any();
      const j = any();
      [frames[i], frames[j]] = [frames[j]!, frames[i]!];
      [types[i], types[j]] = [types[j]!, types[i]!];
      return `swap frames ${i} and ${j}`;
    }
    case 'splice': {
      const donor = draw.pick(donors);
      const k = draw.int(0, donor.frames.length - 1);
      const i = draw.int(0, frames.length);
      frames.splice(i, 0, donor.frames[k]!);
      types.splice(i, 0, donor.types[k]!);
      return `insert another stream's frame (type ${donor.types[k]}) at ${i}`;
    }
    case 'length': {
      const i = any();
      const frame = Buffer.from(frames[i]!);
      const was = frame.length - 4;
      const v = draw.pick([0, 1, was - 1, was + 1, was + 4096, HELLO_MAX_FRAME_BYTES, HELLO_MAX_FRAME_BYTES + 1, MAX_FRAME_BYTES, MAX_FRAME_BYTES + 1, ...EDGE_U32]) >>> 0;
      if (frame.length >= 4) frame.writeUInt32LE(v, 0);
      frames[i] = frame;
      return `length of frame ${i} = ${v} (was ${was})`;
    }
    case 'type': {
      const i = any();
      const frame = Buffer.from(frames[i]!);
      const v = draw.pick([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 255]);
      if (frame.length >= 5) frame.writeUInt8(v, 4);
      frames[i] = frame;
      return `type of frame ${i} = ${v}`;
    }
    case 'batch-json':
    case 'batch-header-length': {
      const i = ofType(FrameType.Batch);
      const parts = i === undefined ? undefined : batchParts(frames[i]!);
      if (i === undefined || !parts) return 'batch edit skipped (no batch frame)';
      if (op === 'batch-header-length') {
        const frame = Buffer.from(frames[i]!);
        const v = draw.pick([0, parts.header.length - 1, parts.header.length + 1, frame.length, ...EDGE_U32]) >>> 0;
        frame.writeUInt32LE(v, 5);
        frames[i] = frame;
        return `header length of batch frame ${i} = ${v}`;
      }
      const edit = mutateJsonObject(draw, parts.header.toString('utf8'));
      frames[i] = batchFrameOf(Buffer.from(edit.text), parts.body);
      return `batch frame ${i}: ${edit.what}`;
    }
    case 'control-json': {
      const i = ofType(FrameType.Hello, FrameType.End, FrameType.Commit);
      if (i === undefined) return 'control edit skipped (no control frame)';
      const edit = mutateJsonObject(draw, frames[i]!.subarray(5).toString('utf8'));
      frames[i] = reframe(frames[i]!.readUInt8(4), Buffer.from(edit.text));
      return `frame ${i} (type ${types[i]}): ${edit.what}`;
    }
    case 'bomb-device-state': {
      // A device state that inflates far past the raw size any VM's could have.
      const bytes = draw.pick(BOMB_BYTES);
      const bomb = reframe(FrameType.DeviceState, zstdBomb(bytes, draw.chance(0.5)));
      const i = ofType(FrameType.DeviceState);
      if (i !== undefined) frames[i] = bomb;
      else {
        const end = ofType(FrameType.End) ?? frames.length;
        frames.splice(end, 0, bomb);
        types.splice(end, 0, FrameType.DeviceState);
      }
      return `device state frame inflating to ${bytes} bytes`;
    }
    case 'bomb-batch': {
      const i = ofType(FrameType.Batch);
      const parts = i === undefined ? undefined : batchParts(frames[i]!);
      if (i === undefined || !parts) return 'batch bomb skipped (no batch frame)';
      let header: Record<string, unknown>;
      try {
        header = JSON.parse(parts.header.toString('utf8')) as Record<string, unknown>;
      } catch {
        return 'batch bomb skipped (header is not JSON)';
      }
      // Checksummed as a source would: the bomb reaches the decoder, bounded only by the declared size.
      const bytes = draw.pick(BOMB_BYTES);
      const payload = zstdBomb(bytes, draw.chance(0.5));
      const delta = String(header.mode ?? 'none/none').split('/')[0];
      Object.assign(header, { mode: `${delta}/zstd-1`, payloadBytes: payload.length, payloadXxh64: checksum(payload) });
      frames[i] = batchFrameOf(Buffer.from(JSON.stringify(header)), payload);
      return `batch frame ${i} payload = zstd inflating to ${bytes} bytes (header rawBytes ${String(header.rawBytes)})`;
    }
  }
}
