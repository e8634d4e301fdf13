import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { BLOCK_SIZE } from '../engine/blocks.js';
import { FrameDecoder, FrameType, WIRE_PROTOCOL, encodeFrame, type Frame } from '../engine/wire/frames.js';

async function decodeAll(bytes: Buffer, chunk = 7): Promise<Frame[]> {
  const pieces: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += chunk) pieces.push(bytes.subarray(i, i + chunk));
  const frames: Frame[] = [];
  for await (const f of Readable.from(pieces).pipe(new FrameDecoder())) frames.push(f as Frame);
  return frames;
}

const hello = { protocol: WIRE_PROTOCOL, version: 1, handoffId: 'h-1', token: 'x'.repeat(32) } as const;

test('every frame type survives encode → decode, split at any byte', async () => {
  const blocks = Buffer.alloc(3 * BLOCK_SIZE);
  for (let i = 0; i < blocks.length; i++) blocks[i] = (i * 31) & 0xff;
  const frames: Frame[] = [
    { type: FrameType.Hello, hello },
    { type: FrameType.DeviceState, data: Buffer.from('device state bytes') },
    { type: FrameType.MemoryBlocks, indices: [0, 7, 131071], blocks },
    { type: FrameType.DiskBlocks, indices: [5, 2 ** 21 - 1, 42], blocks },
    { type: FrameType.End, end: { memoryBlocks: 3, diskBlocks: 3, deviceStateBytes: 18, deviceStateSha256: 'a'.repeat(64) } },
    { type: FrameType.Ack, ack: { memoryBlocks: 3, diskBlocks: 3, deviceStateBytes: 18, bytesReceived: 99 } },
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
  const wire = encodeFrame({ type: FrameType.Hello, hello: { ...hello, version: 2 } });
  await assert.rejects(decodeAll(wire), /field 'version' is 2; this side speaks version 1/);
});

test('a control frame with a bad field names that field', async () => {
  const wire = encodeFrame({ type: FrameType.End, end: { memoryBlocks: -1, diskBlocks: 0, deviceStateBytes: 0, deviceStateSha256: 'a'.repeat(64) } });
  await assert.rejects(decodeAll(wire), /end frame: field 'memoryBlocks'/);
});

test('a block frame whose size does not match its count is corrupt', async () => {
  const good = encodeFrame({ type: FrameType.DiskBlocks, indices: [1, 2], blocks: Buffer.alloc(2 * BLOCK_SIZE) });
  const bad = Buffer.from(good);
  bad.writeUInt32LE(3, 5); // claims three blocks
  await assert.rejects(decodeAll(bad), /do not hold 3 blocks/);
});
