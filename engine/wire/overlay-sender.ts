import { createHash } from 'node:crypto';
import { connect } from 'node:net';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { Compressor } from 'zstd-napi';
import { HandoffError, knownCode } from '../errors.js';
import { Throttle } from './throttle.js';
import type { EncodedBatch } from '../pipeline/overlay-encoder.js';
import { FrameDecoder, FrameType, WIRE_PROTOCOL, WIRE_VERSION, encodeFrame, type Ack, type BatchAck, type Frame } from './frames.js';
import type { Holdings } from './holdings.js';

/**
 * Silence on a data connection, both ways, after which the attempt ends. Acks come per batch
 * while the link moves; the longest quiet stretch of a healthy stream is an epoch's scan and the
 * stop (seconds). Shorter than the heartbeat timeout, so the source notices before Temporal does.
 */
export const DATA_IDLE_TIMEOUT_MS = 20_000;

export interface DataEndpoint {
  host: string;
  port: number;
  token: string;
}

export interface SendObserver {
  /** A batch's frame was handed to the socket (it may still sit in the send buffer). */
  sent?(batch: EncodedBatch, frameBytes: number): void;
  /** The target applied a batch. */
  acked?(ack: BatchAck): void;
}

/** What the target checks the assembled state against, and confirms the resumed guest by. */
export interface StopState {
  memoryDigest: string;
  diskDigest: string;
  heartbeatAtStop: number | null;
}

export interface OutgoingOverlay {
  handoffId: string;
  attempt: number;
  /** Ends the stream: the connection is destroyed, and the end frame never leaves after it. */
  signal?: AbortSignal;
  /** Awaited before the end frame is handed to the link (the source declares its phase first). */
  beforeEnd?: () => Promise<void>;
  /**
   * Awaited once the target acknowledged the end frame, before the commit frame that lets it run
   * the VM is handed to the link: from the commit on, only the target's answer may let the
   * source's copy run again, so the source declares it first.
   */
  beforeCommit?: () => Promise<void>;
  /**
   * For an attempt after the first (required then): called with what the target holds already,
   * before the first batch is asked for, so that the batches send only what it lacks.
   */
  reconcile?: (holdings: Holdings) => Promise<void>;
  batches: AsyncIterable<EncodedBatch>;
  /** Read once the batches are done: a live VM is only stopped (and its state saved) then. */
  deviceState: () => Promise<Buffer>;
  /**
   * The base image's device state, which the target holds too: the VM's is compressed with it as
   * the dictionary (the same machine a while later differs in a few hundred bytes of its 330 KB).
   */
  deviceStateBase: Uint8Array;
  /**
   * The canonical digests of the stopped VM's memory and disk and its last heartbeat at the
   * pause, read after the device state.
   */
  stopState: () => Promise<StopState>;
  /** Operator's bandwidth cap, read as the stream goes; null for none. */
  capMbps?: () => number | null;
}

/** zstd-3 with `base` as a raw-content dictionary: what `base` already says costs a few bytes. */
export function compressAgainst(base: Uint8Array, data: Uint8Array): Buffer {
  const compressor = new Compressor();
  compressor.setParameters({ compressionLevel: 3 });
  compressor.loadDictionary(base);
  return compressor.compress(data);
}

async function* overlayFrames(o: OutgoingOverlay, token: string, observer: SendObserver, holdings: Promise<Holdings>): AsyncGenerator<Buffer> {
  yield encodeFrame({ type: FrameType.Hello, hello: { protocol: WIRE_PROTOCOL, version: WIRE_VERSION, handoffId: o.handoffId, token, attempt: o.attempt } });
  // A resumed attempt goes on from what the target holds: nothing is sent before it is known.
  if (o.attempt > 1) await o.reconcile!(await holdings);
  let batches = 0;
  let chunks = 0;
  for await (const b of o.batches) {
    const frame = encodeFrame({
      type: FrameType.Batch,
      header: {
        seq: b.seq, mode: b.modeId, chunks: b.stages.chunks, rawBytes: b.rawBytes, rawXxh64: b.rawXxh64,
        payloadBytes: b.payload.length, payloadXxh64: b.payloadXxh64,
      },
      payload: Buffer.from(b.payload.buffer, b.payload.byteOffset, b.payload.byteLength),
    });
    batches++;
    chunks += b.stages.chunks;
    observer.sent?.(b, frame.length);
    yield frame;
  }
  const deviceState = await o.deviceState();
  // It is sent while the VM is stopped: every byte saved here is downtime saved.
  const packed = compressAgainst(o.deviceStateBase, deviceState);
  for (let off = 0; off < packed.length; off += 1 << 20) {
    yield encodeFrame({ type: FrameType.DeviceState, data: packed.subarray(off, off + (1 << 20)) });
  }
  const { memoryDigest, diskDigest, heartbeatAtStop } = await o.stopState();
  o.signal?.throwIfAborted();
  await o.beforeEnd?.();
  o.signal?.throwIfAborted();
  yield encodeFrame({
    type: FrameType.End,
    end: {
      batches, chunks, deviceStateBytes: deviceState.length, deviceStateSha256: createHash('sha256').update(deviceState).digest('hex'),
      memoryDigest, diskDigest, heartbeatAtStop,
    },
  });
}

/**
 * Streams device state and the encoded overlay to the target's data plane, waits for its
 * acknowledgement of the end frame and answers it with the commit frame. The socket's
 * backpressure paces the encoder: a batch is produced only
 * when the link can take it, so memory stays bounded by the encoder's window.
 */
export async function sendOverlay(endpoint: DataEndpoint, overlay: OutgoingOverlay, observer: SendObserver = {}): Promise<{ bytesSent: number; ack: Ack }> {
  overlay.signal?.throwIfAborted();
  if (overlay.attempt > 1 && !overlay.reconcile) throw new Error(`attempt ${overlay.attempt} of handoff ${overlay.handoffId} has nothing to reconcile the target's holdings with`);
  const socket = connect({ host: endpoint.host, port: endpoint.port });
  // Every failure of the connection ends this attempt, never the process: one handler for all.
  let failure: Error | undefined;
  const decoder = new FrameDecoder();
  // Its failure is read where the replies are (and as `failure`); an 'error' event before that
  // loop listens must not be an unhandled one.
  decoder.on('error', () => undefined);
  const fail = (err: Error) => {
    failure ??= err;
    socket.destroy();
    decoder.destroy(failure);
  };
  socket.on('error', (e) => fail(new HandoffError('PROTOCOL', `data connection to ${endpoint.host}:${endpoint.port} failed: ${e.message}`)));
  // A target that goes silent (no RST: a cut link, a frozen host) is noticed, not waited on forever.
  socket.setTimeout(DATA_IDLE_TIMEOUT_MS, () => fail(new HandoffError('PROTOCOL', `the target's data plane at ${endpoint.host}:${endpoint.port} was silent for ${DATA_IDLE_TIMEOUT_MS / 1000} s`)));
  const onAbort = () => fail(new HandoffError('PROTOCOL', `stream cancelled: ${String(overlay.signal?.reason ?? 'aborted')}`));
  overlay.signal?.addEventListener('abort', onAbort, { once: true });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('close', () => reject(failure ?? new Error(`cannot reach the target's data plane at ${endpoint.host}:${endpoint.port}`)));
  });
  socket.setNoDelay(true);
  const replies = socket.pipe(decoder);
  let holdingsArrived!: (h: Holdings) => void;
  const holdings = new Promise<Holdings>((resolve) => (holdingsArrived = resolve));
  let ackArrived!: (a: Ack) => void;
  const acked = new Promise<Ack>((resolve) => (ackArrived = resolve));
  let gotAck = false;
  // Every reply of the target, to the end: the ack of the end frame, then its confirmation of
  // the commit.
  const reply = (async () => {
    for await (const f of replies as AsyncIterable<Frame>) {
      if (f.type === FrameType.BatchAck) observer.acked?.(f.batchAck);
      else if (f.type === FrameType.Holdings && overlay.attempt > 1) holdingsArrived(f.holdings);
      else if (f.type === FrameType.Ack && !gotAck) ((gotAck = true), ackArrived(f.ack));
      else if (f.type === FrameType.Committed && gotAck) return;
      else if (f.type === FrameType.Error) throw new HandoffError(knownCode(f.error.code) ?? 'PROTOCOL', `target refused the overlay: ${f.error.message}`);
      else throw new HandoffError('PROTOCOL', `unexpected frame type ${f.type} from the target`);
    }
    throw new HandoffError('PROTOCOL', `target closed the data connection without ${gotAck ? 'confirming the commit' : 'an acknowledgement'}`);
  })();
  reply.catch(() => undefined);
  const ackOrFailure = Promise.race([acked, reply.then((): never => { throw new HandoffError('PROTOCOL', 'the target confirmed a commit it was never sent'); })]);
  ackOrFailure.catch(() => undefined);
  try {
    try {
      // end: false keeps the socket writable-open until the target has answered.
      // One frame queued ahead of the socket, not Readable.from's default sixteen: every frame
      // queued here is link time the source runs ahead of the target, and a live handoff pays
      // for it at the stop (the final epoch waits behind it, the target drains it).
      // The wait for the holdings ends with the replies: a refusal or a broken connection.
      const held = Promise.race([holdings, reply.then(() => Promise.reject(new HandoffError('PROTOCOL', 'the target acknowledged before it said what it holds')))]);
      held.catch(() => undefined);
      await pipeline(Readable.from(overlayFrames(overlay, endpoint.token, observer, held), { highWaterMark: 1 }), new Throttle(overlay.capMbps ?? (() => null)), socket, { end: false });
    } catch (err) {
      // A target that refuses the stream says why before it closes; that beats "EPIPE".
      const why = await Promise.race([reply.then(() => undefined, (e: unknown) => e), sleep(1_000)]);
      throw why ?? err;
    }
    const ack = await ackOrFailure;
    // An attempt ended before this point never lets the target run the VM: no commit leaves.
    overlay.signal?.throwIfAborted();
    await overlay.beforeCommit?.();
    socket.write(encodeFrame({ type: FrameType.Commit, commit: { attempt: overlay.attempt } }));
    // From here the target may run the VM: without its confirmation the outcome is its to say.
    await reply.catch((err: Error) => {
      throw new HandoffError('HANDOFF_IN_DOUBT', `the commit frame of attempt ${overlay.attempt} left for ${endpoint.host}:${endpoint.port} and the target did not confirm it (${(failure ?? err).message}); only its answer decides now`);
    });
    return { bytesSent: socket.bytesWritten, ack };
  } catch (err) {
    throw err instanceof HandoffError && err.code === 'HANDOFF_IN_DOUBT' ? err : (failure ?? err);
  } finally {
    overlay.signal?.removeEventListener('abort', onAbort);
    socket.destroy();
  }
}
