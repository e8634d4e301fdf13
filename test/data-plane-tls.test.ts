import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect as connectTcp } from 'node:net';
import { connect } from 'node:tls';
import { setTimeout as sleep } from 'node:timers/promises';
import { DataPlaneServer, HANDSHAKE_TIMEOUT_MS, MAX_PENDING_HANDSHAKES_PER_ADDRESS, type OverlaySink } from '../engine/wire/data-plane-server.js';
import { FrameDecoder, FrameType, WIRE_PROTOCOL, WIRE_VERSION, encodeFrame, type Frame } from '../engine/wire/frames.js';
import { sendOverlay, type OutgoingOverlay } from '../engine/wire/overlay-sender.js';
import type { CloudletTls } from '../engine/wire/cloudlet-tls.js';
import { devCloudletTls } from '../infra/dev-pki.js';
import { deferred } from '../engine/deferred.js';
import { tempRoot } from './support/fixtures.js';
import { helloWith } from './support/raw-data-client.js';

// The data plane's mutual TLS on loopback: only the handoff's source cloudlet is heard, the
// source talks only to the target it was sent to, and what a peer can make the target hold
// before it is known is bounded.

let A: CloudletTls;
let B: CloudletTls;
let C: CloudletTls;
/** Cloudlet A's name, from another site's CA. */
let foreignA: CloudletTls;
let root: Awaited<ReturnType<typeof tempRoot>>;

before(async () => {
  root = await tempRoot('tls');
  [A, B, C, foreignA] = await Promise.all([devCloudletTls('A'), devCloudletTls('B'), devCloudletTls('C'), devCloudletTls('A', `${root.dir}/other-site`)]);
});
after(async () => root?.remove());

function sinkFrom(source: string, heard: string[] = []): OverlaySink {
  return {
    source,
    deviceStateBase: Buffer.alloc(16),
    begin: async (attempt) => void heard.push(`begin ${attempt}`),
    writeDeviceState: async () => undefined,
    applyBatch: async () => 0,
    complete: async () => undefined,
    granted: async () => true,
    fail: () => undefined,
  };
}

const overlay = (handoffId: string): OutgoingOverlay => ({
  handoffId,
  attempt: 1,
  batches: (async function* () {})(),
  deviceState: async () => Buffer.alloc(0),
  deviceStateBase: Buffer.alloc(16),
  stopState: async () => ({ memoryDigest: 'a'.repeat(64), diskDigest: 'b'.repeat(64), heartbeatAtStop: null }),
});

const refusalOf = (r: { refusal?: string; frames: Frame[] }) => r.refusal ?? r.frames.find((f): f is Extract<Frame, { type: FrameType.Error }> => f.type === FrameType.Error)?.error.message;

test('only the handoff source cloudlet is heard: no certificate, another CA and another cloudlet are refused, the real one streams', async () => {
  const heard: string[] = [];
  const server = new DataPlaneServer('127.0.0.1', B);
  const { port } = await server.start();
  server.expect('h-tls', sinkFrom('A', heard));
  try {
    const bare = await helloWith(port, { ca: B.ca }, 'h-tls');
    assert.equal(refusalOf(bare), undefined, 'a client without a certificate gets no frame');
    const foreign = await helloWith(port, { ...foreignA, ca: B.ca }, 'h-tls');
    assert.equal(refusalOf(foreign), undefined, "a certificate of another site's CA gets no frame, even with the right name");
    const other = await helloWith(port, C, 'h-tls');
    const unknown = await helloWith(port, A, 'h-nobody-prepared');
    assert.equal(refusalOf(other), 'no handoff here expects this connection');
    assert.equal(refusalOf(unknown), refusalOf(other), 'a wrong peer and an unknown handoff read the same: the answer tells nothing of which handoffs exist');
    assert.deepEqual(heard, [], 'none of them began the handoff');
    const { ack } = await sendOverlay({ host: '127.0.0.1', port, cloudlet: 'B' }, A, overlay('h-tls'));
    assert.equal(ack.batches, 0);
    assert.deepEqual(heard, ['begin 1'], 'the source cloudlet streamed');
    const reasons = [...server.refused.keys()].join(' | ');
    assert.match(reasons, /handshake/, `the refused handshakes are counted (${reasons})`);
    assert.equal(server.refused.get('not from A'), 1);
    assert.equal(server.refused.get('unknown handoff'), 1);
  } finally {
    await server.stop();
  }
});

test("a restarted target holds a source's hello until its incoming handoffs are taken up, then serves it", async () => {
  const heard: string[] = [];
  const server = new DataPlaneServer('127.0.0.1', B);
  const takenUp = deferred<void>();
  server.holdHellosUntil(takenUp.promise);
  const { port } = await server.start();
  try {
    // The retried attempt connects while the worker still reads what its predecessor left.
    const sending = sendOverlay({ host: '127.0.0.1', port, cloudlet: 'B' }, A, overlay('h-restarted'));
    sending.catch(() => undefined);
    await sleep(300);
    assert.deepEqual(heard, [], 'nothing begins before the handoffs are known');
    server.expect('h-restarted', sinkFrom('A', heard));
    takenUp.resolve();
    const { ack } = await sending;
    assert.equal(ack.batches, 0);
    assert.deepEqual(heard, ['begin 1'], 'the held hello was served once the handoff was known');
    assert.equal(server.refused.get('unknown handoff'), undefined, 'and it was not refused as unknown');
  } finally {
    await server.stop();
  }
});

test('the source talks only to the target it was sent to: another cloudlet at that address is refused', async () => {
  const server = new DataPlaneServer('127.0.0.1', C);
  const { port } = await server.start();
  const heard: string[] = [];
  server.expect('h-mitm', sinkFrom('A', heard));
  try {
    await assert.rejects(sendOverlay({ host: '127.0.0.1', port, cloudlet: 'B' }, A, overlay('h-mitm')), /certificate names DNS:C, not cloudlet B/);
    assert.deepEqual(heard, [], 'no hello reached the impostor');
  } finally {
    await server.stop();
  }
});

test('before its hello is taken, a peer cannot make the target buffer a large frame', async () => {
  const server = new DataPlaneServer('127.0.0.1', B);
  const { port } = await server.start();
  try {
    const socket = connect({ host: '127.0.0.1', port, ...A, checkServerIdentity: () => undefined });
    socket.on('error', () => undefined);
    await once(socket, 'secureConnect');
    const frames: Frame[] = [];
    const decoder = socket.pipe(new FrameDecoder());
    decoder.on('data', (f: Frame) => frames.push(f));
    decoder.on('error', () => undefined);
    const header = Buffer.alloc(5);
    header.writeUInt32LE(16 << 20, 0);
    header.writeUInt8(FrameType.Batch, 4);
    socket.write(header);
    const closedWithin = await Promise.race([once(socket, 'close').then(() => true), sleep(3_000).then(() => false)]);
    assert.ok(closedWithin, 'the connection was closed at the announcement, not after 16 MiB arrived');
    assert.match(refusalOf({ frames }) ?? '', /frame length 16777216 is outside 1\.\.4096/);
  } finally {
    await server.stop();
  }
});

test('handshakes are bounded: a flood from one address is capped and timed out, and a source elsewhere still streams', async () => {
  const server = new DataPlaneServer('127.0.0.1', B);
  const { port } = await server.start();
  server.expect('h-flood', sinkFrom('A'));
  const flood = 3 * MAX_PENDING_HANDSHAKES_PER_ADDRESS;
  try {
    const started = Date.now();
    const closedAfterMs: number[] = [];
    const sockets = await Promise.all(
      Array.from({ length: flood }, async () => {
        // From 127.0.0.2: the flood's address, not the source's.
        const s = connectTcp({ host: '127.0.0.1', port, localAddress: '127.0.0.2' });
        s.on('error', () => undefined);
        s.on('close', () => closedAfterMs.push(Date.now() - started));
        await once(s, 'connect');
        return s;
      }),
    );
    await sleep(500);
    assert.equal(closedAfterMs.length, flood - MAX_PENDING_HANDSHAKES_PER_ADDRESS, 'all but the cap were closed at once');
    const { ack } = await sendOverlay({ host: '127.0.0.1', port, cloudlet: 'B' }, A, overlay('h-flood'));
    assert.equal(ack.batches, 0, 'the real source streamed while the flood held its share');
    await sleep(HANDSHAKE_TIMEOUT_MS + 1_000 - (Date.now() - started));
    assert.equal(closedAfterMs.length, flood, 'the rest were closed at the handshake timeout');
    assert.ok(Math.max(...closedAfterMs) <= HANDSHAKE_TIMEOUT_MS + 1_000, `the last closed after ${Math.max(...closedAfterMs)} ms`);
    for (const s of sockets) s.destroy();
  } finally {
    await server.stop();
  }
});
