import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { connect, createServer as createTlsServer, type TLSSocket } from 'node:tls';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { DataPlaneServer, type OverlaySink } from '../engine/wire/data-plane-server.js';
import { FrameDecoder, FrameType, WIRE_PROTOCOL, WIRE_VERSION, encodeFrame, type Frame } from '../engine/wire/frames.js';
import { DATA_IDLE_TIMEOUT_MS, sendOverlay, type OutgoingOverlay } from '../engine/wire/overlay-sender.js';
import { HandoffError } from '../engine/errors.js';
import type { CloudletTls } from '../engine/wire/cloudlet-tls.js';
import { devCloudletTls } from '../infra/dev-pki.js';

// The data plane under faults, on loopback: a refused or reset connection ends the attempt with
// an error naming it (never the process), and the target serves one connection per handoff, the
// newest attempt's.

// The two cloudlets' certificates from the development site CA: A streams, B listens.
let A: CloudletTls;
let B: CloudletTls;
before(async () => {
  A = await devCloudletTls('A');
  B = await devCloudletTls('B');
});
const toB = (port: number) => ({ host: '127.0.0.1', port, cloudlet: 'B' });

/** A sink that takes everything and does nothing, but for what a test overrides. */
function sinkWith(overrides: Partial<OverlaySink>): OverlaySink {
  return {
    source: 'A',
    deviceStateBase: Buffer.alloc(16),
    begin: async () => undefined,
    writeDeviceState: async () => undefined,
    applyBatch: async () => 0,
    complete: async () => undefined,
    granted: async () => true,
    fail: () => undefined,
    ...overrides,
  };
}

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
  await assert.rejects(sendOverlay(toB(port), A, overlay(1)), new RegExp(`127\\.0\\.0\\.1:${port}`));
});

test("a peer's reset fails the attempt, and nothing else", async () => {
  const server = createServer((s) => s.resetAndDestroy());
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as { port: number }).port;
  try {
    await assert.rejects(sendOverlay(toB(port), A, overlay(1)), /ECONNRESET|EPIPE|closed|failed/);
  } finally {
    server.close();
  }
});

/** A raw client: sends a hello of `attempt`, returns the socket and the frames it gets back. */
async function helloFrom(port: number, attempt: number): Promise<{ socket: TLSSocket; frames: Frame[]; closed: Promise<unknown> }> {
  const socket = connect({ port, host: '127.0.0.1', ...A, checkServerIdentity: () => undefined });
  await once(socket, 'secureConnect');
  const frames: Frame[] = [];
  const decoder = socket.pipe(new FrameDecoder());
  decoder.on('data', (f: Frame) => frames.push(f));
  decoder.on('error', () => undefined);
  socket.on('error', () => undefined);
  socket.write(encodeFrame({ type: FrameType.Hello, hello: { protocol: WIRE_PROTOCOL, version: WIRE_VERSION, handoffId: 'h-fence', attempt } }));
  return { socket, frames, closed: once(socket, 'close') };
}

test('one connection per handoff: a newer attempt cuts the older off, an older one or a second of the same is refused', async () => {
  const begun: number[] = [];
  const sink = sinkWith({ begin: async (attempt) => void begun.push(attempt) });
  const server = new DataPlaneServer('127.0.0.1', B);
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
    const again = await helloFrom(port, 3);
    await again.closed;
    const twice = again.frames.find((f) => f.type === FrameType.Error);
    assert.ok(twice && twice.type === FrameType.Error);
    assert.match(twice.error.message, /attempt 3 of handoff h-fence is already connected/, 'a second connection of the attempt being served is refused');
    assert.deepEqual(begun, [2, 3], 'and never began');
    assert.equal(third.socket.destroyed, false, 'the newest connection is still served');
    third.socket.destroy();
  } finally {
    await server.stop();
  }
});

test('a resumed attempt learns what the target holds before it sends its first batch', async () => {
  const holdings = {
    memory: { indices: Uint32Array.from([2, 9]), prefixes: Buffer.alloc(16, 7) },
    disk: { indices: Uint32Array.from([4]), prefixes: Buffer.alloc(8, 1) },
  };
  const sink = sinkWith({ begin: async (attempt) => (attempt > 1 ? holdings : undefined) });
  const server = new DataPlaneServer('127.0.0.1', B);
  const { port } = await server.start();
  server.expect('h-fault', sink);
  try {
    const order: string[] = [];
    const resumed: OutgoingOverlay = {
      ...overlay(2),
      reconcile: async (h) => {
        assert.deepEqual(h, holdings);
        order.push('reconciled');
      },
      batches: (async function* () {
        order.push('first batch asked for');
      })(),
    };
    const { ack } = await sendOverlay(toB(port), A, resumed);
    assert.equal(ack.batches, 0);
    assert.deepEqual(order, ['reconciled', 'first batch asked for']);
    await assert.rejects(sendOverlay(toB(port), A, overlay(3)), /attempt 3 of handoff h-fault has nothing to reconcile/);
  } finally {
    await server.stop();
  }
});

test('the end and the commit leave together, only once the source declared them; a failed declaration sends neither', async () => {
  const heard: string[] = [];
  const sink = sinkWith({
    complete: async (_ack, _stop, attempt) => void heard.push(`end ${attempt}`),
    granted: async (attempt) => (heard.push(`commit ${attempt}`), true),
    fail: (err, attempt) => void heard.push(`failed ${attempt}: ${err.message}`),
  });
  const server = new DataPlaneServer('127.0.0.1', B);
  const { port } = await server.start();
  server.expect('h-fault', sink);
  try {
    await assert.rejects(
      sendOverlay(toB(port), A, { ...overlay(1), beforeCommit: async () => Promise.reject(new Error('the source gave up')) }),
      /the source gave up/,
    );
    while (heard.length < 1) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(heard, ['failed 1: overlay stream ended before its end frame'], 'the target never saw an end it could commit on');
    heard.length = 0;
    const order: string[] = [];
    const { ack } = await sendOverlay(toB(port), A, { ...overlay(1), beforeCommit: async () => void order.push(`declared with ${heard.length} heard`) });
    assert.equal(ack.batches, 0);
    assert.deepEqual(heard, ['end 1', 'commit 1'], 'the sender returns only on the confirmed commit');
    assert.deepEqual(order, ['declared with 0 heard'], 'the source declares its commit before the end frame leaves');
  } finally {
    await server.stop();
  }
});

test('the end waits for an answer from the target since the pause', async () => {
  const heard: string[] = [];
  const server = new DataPlaneServer('127.0.0.1', B);
  const { port } = await server.start();
  server.expect('h-fault', sinkWith({ complete: async () => void heard.push('end') }));
  try {
    let answer!: () => void;
    const answered = new Promise<void>((r) => (answer = r));
    const sending = sendOverlay(toB(port), A, { ...overlay(1), answeredSincePause: () => answered });
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(heard, [], 'no end left before the target answered');
    answer();
    await sending;
    assert.deepEqual(heard, ['end']);
  } finally {
    await server.stop();
  }
});

test('a target that freezes while the device state is on its way fails the attempt at the silence bound, not when it thaws', { timeout: 60_000 }, async () => {
  // It takes the connection and then reads nothing: its window closes while the device state is
  // written, as a SIGSTOPped worker's did in the fault subset (nothing sent after the pause, so
  // no batch owed an ack). The source's guest is paused all the while: the attempt must end at
  // the bound, and the source resume it, not wait for the thaw.
  const frozen: TLSSocket[] = [];
  const server = createTlsServer({ ...B, requestCert: true }, (s) => {
    frozen.push(s);
    s.pause();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as { port: number }).port;
  try {
    const deviceState = randomBytes(32 << 20); // more than both ends' socket buffers hold
    const t0 = Date.now();
    await assert.rejects(sendOverlay(toB(port), A, { ...overlay(1), deviceState: async () => deviceState }), /owed an answer and was silent/);
    const seconds = (Date.now() - t0) / 1000;
    assert.ok(seconds >= DATA_IDLE_TIMEOUT_MS / 1000 - 1 && seconds < DATA_IDLE_TIMEOUT_MS / 1000 + 5, `failed after ${seconds.toFixed(1)} s`);
  } finally {
    for (const s of frozen) s.destroy();
    server.close();
  }
});

test('a commit the target refuses is its answer, which ends the attempt without a doubt', async () => {
  const server = new DataPlaneServer('127.0.0.1', B);
  const { port } = await server.start();
  try {
    // The end was withdrawn here before the commit came (a newer attempt, say): the target says so.
    server.expect('h-fault', sinkWith({ granted: async () => false }));
    await assert.rejects(sendOverlay(toB(port), A, overlay(1)), (err: unknown) => {
      assert.ok(err instanceof HandoffError);
      assert.equal(err.code, 'PROTOCOL');
      assert.match(err.message, /target refused the overlay: the commit of attempt 1 came after its end was withdrawn here/);
      return true;
    });
  } finally {
    await server.stop();
  }
});

test('a commit the target takes in and never confirms leaves the source in doubt, not free to resume', async () => {
  // A target that went away after the commit reached it may have run the VM: only it can say.
  const server = createTlsServer({ ...B, requestCert: true, rejectUnauthorized: true }, (s) => {
    s.on('error', () => undefined);
    const decoder = s.pipe(new FrameDecoder());
    decoder.on('error', () => undefined);
    decoder.on('data', (f: Frame) => {
      if (f.type === FrameType.End) s.write(encodeFrame({ type: FrameType.Ack, ack: { batches: 0, chunks: 0, deviceStateBytes: 0, bytesReceived: 0 } }));
      if (f.type === FrameType.Commit) s.destroy();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as { port: number }).port;
  try {
    await assert.rejects(sendOverlay(toB(port), A, overlay(1)), (err: unknown) => {
      assert.ok(err instanceof HandoffError);
      assert.equal(err.code, 'HANDOFF_IN_DOUBT');
      assert.match(err.message, /end and commit frames of attempt 1 left .* did not confirm the commit/);
      return true;
    });
  } finally {
    server.close();
  }
});
