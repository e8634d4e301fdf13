import { createHash } from 'node:crypto';
import { FrameType, WIRE_PROTOCOL, WIRE_VERSION, encodeFrame, type BatchHeader } from '../../engine/wire/frames.js';
import { compressAgainst } from '../../engine/wire/overlay-sender.js';
import { Draw } from './draw.js';
import { largeBatch, type ValidBatch } from './valid-batches.js';

/**
 * Whole overlay streams a target takes from start to commit, frame by frame: the inputs the
 * mutations start from, so that most of what the fuzzer sends gets past the hello and the
 * schemas into the applier and the end-frame checks. Attempt 1, as a source's first connection.
 */
export interface ValidStream {
  name: string;
  /** How often it is picked: the large ones cost a case tens of milliseconds. */
  weight: number;
  /** The frames after the hello (which names each case's own handoff), each encoded on its own. */
  frames: Buffer[];
  types: FrameType[];
}

/** The base image's device state both sides hold: the dictionary the VM's is compressed against. */
export const DEVICE_STATE_BASE: Buffer = new Draw(0xde51ce, 0).bytes(16 << 10);

export function helloFrame(handoffId: string): Buffer {
  return encodeFrame({ type: FrameType.Hello, hello: { protocol: WIRE_PROTOCOL, version: WIRE_VERSION, handoffId, attempt: 1 } });
}

export function batchFrame(header: BatchHeader, payload: Buffer): Buffer {
  return encodeFrame({ type: FrameType.Batch, header, payload });
}

/** Batches, then the device state in pieces, the end frame that counts them and the commit, as overlay-sender.ts sends them. */
function stream(name: string, weight: number, batches: ValidBatch[], deviceState: Buffer | undefined, deviceStatePieces = 1): ValidStream {
  const frames: Buffer[] = [];
  const types: FrameType[] = [];
  const add = (type: FrameType, frame: Buffer) => {
    frames.push(frame);
    types.push(type);
  };
  batches.forEach((b, seq) => add(FrameType.Batch, batchFrame({ ...b.header, seq }, b.payload)));
  if (deviceState) {
    const packed = compressAgainst(DEVICE_STATE_BASE, deviceState);
    const piece = Math.ceil(packed.length / deviceStatePieces);
    for (let off = 0; off < packed.length; off += piece) add(FrameType.DeviceState, encodeFrame({ type: FrameType.DeviceState, data: packed.subarray(off, off + piece) }));
  }
  const end = {
    batches: batches.length,
    chunks: batches.reduce((n, b) => n + b.header.chunks, 0),
    deviceStateBytes: deviceState?.length ?? 0,
    deviceStateSha256: createHash('sha256').update(deviceState ?? Buffer.alloc(0)).digest('hex'),
    memoryDigest: 'a'.repeat(64),
    diskDigest: 'b'.repeat(64),
    heartbeatAtStop: deviceState ? 41 : null,
  };
  add(FrameType.End, encodeFrame({ type: FrameType.End, end }));
  add(FrameType.Commit, encodeFrame({ type: FrameType.Commit, commit: { attempt: 1 } }));
  return { name, weight, frames, types };
}

/** The base's device state with a few hundred bytes changed, as the same machine a while later. */
function deviceStateNear(draw: Draw): Buffer {
  const state = Buffer.from(DEVICE_STATE_BASE);
  for (let k = 0; k < 40; k++) draw.bytes(8).copy(state, draw.int(0, state.length - 8));
  return state;
}

export async function buildValidStreams(batches: ValidBatch[]): Promise<ValidStream[]> {
  const draw = new Draw(0x57ea, 0);
  const some = (n: number) => Array.from({ length: n }, () => draw.pick(batches));
  return [
    stream('empty overlay', 3, [], undefined),
    stream('device state only', 3, [], deviceStateNear(draw), 2),
    stream('one batch', 6, some(1), undefined),
    stream('three batches and device state', 6, some(3), deviceStateNear(draw)),
    stream('eight batches and device state in three frames', 4, some(8), deviceStateNear(draw), 3),
    stream('every batch of the corpus', 1, batches, deviceStateNear(draw)),
    // A full-size batch (256 chunks, 1 MiB uncompressed) and a device state frame twice the
    // sender's piece: large frames are where the decoder buffers across many reads.
    stream('one 1 MiB batch', 1, [await largeBatch('none/none', 256)], undefined),
    stream('a 2 MiB device state frame', 1, [], draw.bytes(2 << 20)),
  ];
}
