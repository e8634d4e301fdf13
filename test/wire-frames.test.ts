import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { BLOCK_SIZE } from '../engine/blocks.js';
import { FrameDecoder, FrameType, WIRE_PROTOCOL, WIRE_VERSION, encodeFrame, type Frame } from '../engine/wire/frames.js';
import { compressAgainst } from '../engine/wire/overlay-sender.js';
import { Decompressor } from 'zstd-napi';

async function decodeAll(bytes: Buffer, chunk = 7): Promise<Frame[]> {
  const pieces: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += chunk) pieces.push(bytes.subarray(i, i + chunk));
  const frames: Frame[] = [];
  for await (const f of Readable.from(pieces).pipe(new FrameDecoder())) frames.push(f as Frame);
  return frames;
}

function batchHeader(payload: Buffer) {
  return { seq: 0, mode: 'xor/zstd-3', chunks: 3, rawBytes: 9000, rawXxh64: '0123456789abcdef', payloadBytes: payload.length, payloadXxh64: 'fedcba9876543210' };
}

const hello = { protocol: WIRE_PROTOCOL, version: WIRE_VERSION, handoffId: 'h-1', attempt: 2 } as const;

test('every frame type survives encode → decode, split at any byte', async () => {
  const blocks = Buffer.alloc(3 * BLOCK_SIZE);
  for (let i = 0; i < blocks.length; i++) blocks[i] = (i * 31) & 0xff;
  const frames: Frame[] = [
    { type: FrameType.Hello, hello },
    { type: FrameType.DeviceState, data: Buffer.from('device state bytes') },
    { type: FrameType.Batch, header: batchHeader(blocks), payload: blocks },
    { type: FrameType.BatchAck, batchAck: { seq: 0, bytesReceived: 5000 } },
    { type: FrameType.End, end: { batches: 1, chunks: 3, deviceStateBytes: 18, deviceStateSha256: 'a'.repeat(64), memoryDigest: 'b'.repeat(64), diskDigest: 'c'.repeat(64), heartbeatAtStop: 41 } },
    { type: FrameType.Ack, ack: { batches: 1, chunks: 3, deviceStateBytes: 18, bytesReceived: 99 } },
    { type: FrameType.Commit, commit: { attempt: 2 } },
    { type: FrameType.Committed, commit: { attempt: 2 } },
    { type: FrameType.Holdings, holdings: { memory: { indices: Uint32Array.from([1, 4]), prefixes: Buffer.alloc(16, 3) }, disk: { indices: new Uint32Array(0), prefixes: Buffer.alloc(0) } } },
  ];
  const wire = Buffer.concat(frames.map(encodeFrame));
  for (const chunk of [1, 5, 4096, wire.length]) {
    const back = await decodeAll(wire, chunk);
    assert.equal(back.length, frames.length);
    back.forEach((f, i) => assert.deepEqual(f, frames[i]));
  }
});

test('a stream cut inside a frame is an error, not a short overlay', async () => {
  const wire = encodeFrame({ type: FrameType.DeviceState, data: Buffer.alloc(100) });
  await assert.rejects(decodeAll(wire.subarray(0, wire.length - 1)), /stream ended inside a frame/);
});

test('unknown frame types and impossible lengths are rejected by name', async () => {
  const unknown = Buffer.from([1, 0, 0, 0, 99]);
  await assert.rejects(decodeAll(unknown), /unknown frame type 99/);
  const huge = Buffer.alloc(5);
  huge.writeUInt32LE(0xffffffff, 0);
  await assert.rejects(decodeAll(huge), /frame length 4294967295 is outside/);
});

test('a hello of another protocol version is rejected, naming the field', async () => {
  const wire = encodeFrame({ type: FrameType.Hello, hello: { ...hello, version: 1 } });
  await assert.rejects(decodeAll(wire), new RegExp(`field 'version' is 1; this side speaks version ${WIRE_VERSION}`));
});

test('a control frame with a bad field names that field', async () => {
  const wire = encodeFrame({ type: FrameType.End, end: { batches: -1, chunks: 0, deviceStateBytes: 0, deviceStateSha256: 'a'.repeat(64), memoryDigest: 'b'.repeat(64), diskDigest: 'c'.repeat(64), heartbeatAtStop: null } });
  await assert.rejects(decodeAll(wire), /end frame: field 'batches'/);
});

test('a batch frame with an unknown mode or a short payload is rejected, naming the field', async () => {
  const payload = Buffer.alloc(100);
  const badMode = encodeFrame({ type: FrameType.Batch, header: { ...batchHeader(payload), mode: 'xor/zstd-4' }, payload });
  await assert.rejects(decodeAll(badMode), /batch frame: field 'mode'/);
  const good = encodeFrame({ type: FrameType.Batch, header: batchHeader(payload), payload });
  const short = Buffer.concat([good.subarray(0, good.length - 10)]);
  short.writeUInt32LE(short.length - 4, 0);
  await assert.rejects(decodeAll(short), /field 'payloadBytes' says 100, frame holds 90/);
});

test('the device state travels as its difference from the base image\'s: a few hundred bytes, not the whole', () => {
  const base = randomBytes(300_000);
  const later = Buffer.from(base);
  for (let i = 0; i < 40; i++) later.writeUInt32LE(i * 7919, (i * 7451) % (later.length - 4)); // timers, ring indices
  const packed = compressAgainst(base, later);
  assert.ok(packed.length < 2_000, `packed to ${packed.length} bytes`);
  const decompressor = new Decompressor();
  decompressor.loadDictionary(base);
  assert.deepEqual(decompressor.decompress(packed), later);
  // Without the dictionary it does not come back (the end frame's SHA-256 would refuse it anyway).
  assert.throws(() => new Decompressor().decompress(packed));
});
