import { connect } from 'node:tls';
import { setTimeout as sleep } from 'node:timers/promises';
import { applyBatch } from '../../engine/pipeline/batch-applier.js';
import type { EncodedBatch } from '../../engine/pipeline/overlay-encoder.js';
import type { CloudletTls } from '../../engine/wire/cloudlet-tls.js';
import { DataPlaneServer, type OverlaySink } from '../../engine/wire/data-plane-server.js';
import { FrameDecoder, FrameType, type Frame } from '../../engine/wire/frames.js';
import { sendOverlay } from '../../engine/wire/overlay-sender.js';
import { devCloudletTls } from '../../infra/dev-pki.js';
import { BoundedStore } from './bounded-store.js';
import { cut } from './chunking.js';
import type { StreamInput } from './fuzz-inputs.js';
import { withinBound } from './time-bound.js';
import type { ValidBatch } from './valid-batches.js';
import { DEVICE_STATE_BASE } from './valid-streams.js';
import { PASSED, failed, uncleanRefusal, verdictOnStores, worst, type Verdict } from './verdict.js';

/** After the last case: time enough for the server to close what its peers closed, on loopback. */
const STOP_GRACE_MS = 1_000;
/** Long enough on loopback for the server to take the hello before the next frame arrives. */
const HELLO_PAUSE_MS = 5;

/** A sink over a bounded store that keeps every failure the server reports to it. */
function boundedSink(store: BoundedStore, base: BoundedStore): OverlaySink & { failures: Error[]; committed: boolean } {
  const sink = {
    source: 'A',
    deviceStateBase: DEVICE_STATE_BASE,
    failures: [] as Error[],
    committed: false,
    begin: async () => undefined,
    writeDeviceState: async () => undefined,
    applyBatch: (header: Parameters<OverlaySink['applyBatch']>[0], payload: Buffer) => applyBatch(header, payload, store, base),
    complete: async () => undefined,
    granted: async () => (sink.committed = true),
    fail: (err: Error) => void sink.failures.push(err),
  };
  return sink;
}

/**
 * One DataPlaneServer on loopback, as cloudlet B, that every socket case connects to as its
 * source A over mutual TLS 1.3: the server must outlive all of them, and still take a real
 * source's overlay between them.
 */
export class SocketHarness {
  private liveChecks = 0;

  private constructor(private readonly server: DataPlaneServer, private readonly port: number, private readonly source: CloudletTls) {}

  static async start(): Promise<SocketHarness> {
    const [source, target] = await Promise.all([devCloudletTls('A'), devCloudletTls('B')]);
    const server = new DataPlaneServer('127.0.0.1', target);
    const { port } = await server.start();
    return new SocketHarness(server, port, source);
  }

  /**
   * Sends the input in its reads (one TLS record each), then ends its side; the case is over when
   * the server ended its own, with an answer. A server that keeps the connection open past the
   * bound hangs; it need not read what it refused.
   */
  async runCase(input: StreamInput, boundMs: number): Promise<Verdict> {
    const store = new BoundedStore();
    const base = new BoundedStore();
    const sink = boundedSink(store, base);
    this.server.expect(input.handoffId, sink);
    const socket = connect({ host: '127.0.0.1', port: this.port, ...this.source, checkServerIdentity: () => undefined });
    const replies: Frame[] = [];
    socket.on('error', () => undefined);
    const decoder = socket.pipe(new FrameDecoder());
    decoder.on('data', (f: Frame) => replies.push(f));
    decoder.on('error', () => undefined);
    const answered = new Promise<void>((resolve) => {
      socket.once('end', resolve);
      socket.once('close', resolve);
    });
    const exchange = async () => {
      await Promise.race([new Promise((resolve) => socket.once('secureConnect', resolve)), answered]);
      for (const [n, piece] of cut(input.bytes, input.chunking).entries()) {
        if (socket.destroyed || socket.writableEnded) break;
        socket.write(piece);
        if (n === input.pauseAfterRead) await sleep(HELLO_PAUSE_MS);
      }
      socket.end();
      await answered;
    };
    const outcome = await withinBound(exchange(), boundMs);
    socket.destroy();
    this.server.forget(input.handoffId);
    if (outcome === 'timed out') return failed('hang', `the server gave no answer within ${boundMs} ms (replies: ${describe(replies)})`);
    const unclean = sink.failures.map(uncleanRefusal).find((why) => why !== undefined);
    const refusal = replies.find((f): f is Extract<Frame, { type: FrameType.Error }> => f.type === FrameType.Error)?.error.message;
    return worst(
      unclean ? failed('crash', `the server failed the stream with ${unclean}`) : PASSED,
      verdictOnStores(store.violations, base.violations),
      input.intact && !replies.some((f) => f.type === FrameType.Committed) ? failed('refused-valid', `a valid stream was not committed: ${refusal ?? `replies ${describe(replies)}`}`) : PASSED,
    );
  }

  /** A real source (overlay-sender.ts) streams one valid batch and a device state to the end and commit. */
  async checkAlive(batch: ValidBatch, boundMs: number): Promise<Verdict> {
    const handoffId = `fz-live-${this.liveChecks++}`;
    const store = new BoundedStore();
    const base = new BoundedStore();
    const sink = boundedSink(store, base);
    this.server.expect(handoffId, sink);
    const encoded: EncodedBatch = {
      seq: 0, modeId: batch.header.mode, payload: batch.payload, rawBytes: batch.header.rawBytes, rawXxh64: batch.header.rawXxh64,
      payloadXxh64: batch.header.payloadXxh64, busyMs: 0, inputBytes: 0, classifyMs: 0,
      stages: { chunks: batch.header.chunks, zero: 0, baseRefs: 0, selfRefs: 0, data: batch.header.chunks, againstPrevious: 0 },
    };
    const sending = sendOverlay({ host: '127.0.0.1', port: this.port, cloudlet: 'B' }, this.source, {
      handoffId,
      attempt: 1,
      batches: (async function* () {
        yield encoded;
      })(),
      deviceState: async () => Buffer.from(DEVICE_STATE_BASE).fill(7, 0, 100),
      deviceStateBase: DEVICE_STATE_BASE,
      stopState: async () => ({ memoryDigest: 'a'.repeat(64), diskDigest: 'b'.repeat(64), heartbeatAtStop: 1 }),
    }).then(
      ({ ack }) => (ack.batches === 1 && ack.chunks === batch.header.chunks ? PASSED : failed('server-down', `a valid overlay was acknowledged as ${JSON.stringify(ack)}`)),
      (err: Error) => failed('server-down', `a valid overlay from a real source failed: ${err.message}`),
    );
    const outcome = await withinBound(sending, boundMs);
    this.server.forget(handoffId);
    if (outcome === 'timed out') return failed('server-down', `a valid overlay from a real source was not committed within ${boundMs} ms`);
    return worst(outcome.value, sink.committed ? PASSED : failed('server-down', 'the sink never saw the commit'), verdictOnStores(store.violations, base.violations));
  }

  /**
   * Stops listening. Returns the connections still open a second after the last case, every
   * client side of them long destroyed: what the server holds on to after its answer. Closing
   * waits for them no longer than that (a paused socket does not keep the process alive, so an
   * unbounded wait would let it exit with the run unfinished).
   */
  async stop(): Promise<number> {
    await sleep(STOP_GRACE_MS);
    const held = process.getActiveResourcesInfo().filter((r) => r === 'TCPSocketWrap').length;
    await Promise.race([this.server.stop(), sleep(STOP_GRACE_MS)]);
    return held;
  }
}

function describe(replies: Frame[]): string {
  return replies.length ? replies.map((f) => (f.type === FrameType.Error ? `error '${f.error.message}'` : `type ${f.type}`)).join(', ') : 'none';
}
