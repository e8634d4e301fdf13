import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, createServer, type Socket } from 'node:net';
import { once } from 'node:events';
import { DataPlaneServer, type OverlaySink } from '../engine/wire/data-plane-server.js';
import { FrameDecoder, FrameType, WIRE_PROTOCOL, WIRE_VERSION, encodeFrame, type Frame } from '../engine/wire/frames.js';
import { sendOverlay, type OutgoingOverlay } from '../engine/wire/overlay-sender.js';

// The data plane under faults, on loopback: a refused or reset connection ends the attempt with
// an error naming it (never the process), and the target serves one connection per handoff, the
// newest attempt's.

const TOKEN = 't'.repeat(32);

function overlay(attempt: number): OutgoingOverlay {
  return {
    handoffId: 'h-fault',
    attempt,
    batches: (async function* () {})(),
    deviceState: async () => Buffer.alloc(0),
    deviceStateBase: Buffer.alloc(16),
    stopState: async () => ({ memoryDigest: 'a'.repeat(64), diskDigest: 'b'.repeat(64), heartbeatAtStop: null }),
  };
}

test('a refused connection fails the attempt with the address in the error', async () => {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((r) => server.close(() => r()));
  await assert.rejects(sendOverlay({ host: '127.0.0.1', port, token: TOKEN }, overlay(1)), new RegExp(`127\\.0\\.0\\.1:${port}`));
});

test("a peer's reset fails the attempt, and nothing else", async () => {
  const server = createServer((s) => s.resetAndDestroy());
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as { port: number }).port;
  try {
    await assert.rejects(sendOverlay({ host: '127.0.0.1', port, token: TOKEN }, overlay(1)), /ECONNRESET|EPIPE|closed|failed/);
  } finally {
    server.close();
  }
});

/** A raw client: sends a hello of `attempt`, returns the socket and the frames it gets back. */
async function helloFrom(port: number, attempt: number): Promise<{ socket: Socket; frames: Frame[]; closed: Promise<unknown> }> {
  const socket = connect(port, '127.0.0.1');
  await once(socket, 'connect');
  const frames: Frame[] = [];
  const decoder = socket.pipe(new FrameDecoder());
  decoder.on('data', (f: Frame) => frames.push(f));
  decoder.on('error', () => undefined);
  socket.on('error', () => undefined);
  socket.write(encodeFrame({ type: FrameType.Hello, hello: { protocol: WIRE_PROTOCOL, version: WIRE_VERSION, handoffId: 'h-fence', token: TOKEN, attempt } }));
  return { socket, frames, closed: once(socket, 'close') };
}

test('one connection per handoff: a newer attempt cuts the older off, and an older one is refused', async () => {
  const begun: number[] = [];
  const sink: OverlaySink = {
    token: TOKEN,
    deviceStateBase: Buffer.alloc(16),
    begin: async (attempt) => void begun.push(attempt),
    writeDeviceState: async () => undefined,
    applyBatch: async () => 0,
    complete: async () => undefined,
    fail: () => undefined,
  };
  const server = new DataPlaneServer('127.0.0.1');
  const { port } = await server.start();
  server.expect('h-fence', sink);
  try {
    const second = await helloFrom(port, 2);
    while (begun.length < 1) await new Promise((r) => setTimeout(r, 10));
    const third = await helloFrom(port, 3);
    await second.closed;
    assert.deepEqual(begun, [2, 3], 'each newer attempt began the sink again');
    const first = await helloFrom(port, 1);
    await first.closed;
    const refusal = first.frames.find((f) => f.type === FrameType.Error);
    assert.ok(refusal && refusal.type === FrameType.Error);
    assert.match(refusal.error.message, /attempt 1 of handoff h-fence is superseded by attempt 3/);
    assert.deepEqual(begun, [2, 3], 'the older attempt never began');
    assert.equal(third.socket.destroyed, false, 'the newest connection is still served');
    third.socket.destroy();
  } finally {
    await server.stop();
  }
});
