import { createHash } from 'node:crypto';
import { connect } from 'node:tls';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { Compressor } from 'zstd-napi';
import { HandoffError, knownCode } from '../errors.js';
import { stopTrace } from '../stop-trace.js';
import { deferred } from '../deferred.js';
import { Throttle } from './throttle.js';
import { AnswerWatch } from './answer-watch.js';
import type { EncodedBatch } from '../pipeline/overlay-encoder.js';
import { FrameDecoder, FrameType, WIRE_PROTOCOL, WIRE_VERSION, encodeFrame, type Ack, type BatchAck, type End, type Frame } from './frames.js';
import type { Holdings } from './holdings.js';
import { expectCloudlet, type CloudletTls } from './cloudlet-tls.js';
import type { StateDigests } from '../contract.js';

/**
 * Silence on a data connection, both ways, after which the attempt ends. Acks come per batch
 * while the link moves; the longest quiet stretch of a healthy stream is an epoch's scan and the
 * stop (seconds). Shorter than the heartbeat timeout, so the source notices before Temporal does.
 */
export const DATA_IDLE_TIMEOUT_MS = 20_000;

/**
 * Where a target's data plane listens, and whose it is: the source connects only if the
 * certificate there names `cloudlet`. Nothing in it grants access (it goes into history).
 */
export interface DataEndpoint {
  host: string;
  port: number;
  cloudlet: string;
}

export interface SendObserver {
  /** A batch's frame was handed to the socket (it may still sit in the send buffer). */
  sent?(batch: EncodedBatch, frameBytes: number): void;
  /** The target applied a batch. */
  acked?(ack: BatchAck): void;
}

/** What the target checks the assembled state against, and confirms the resumed guest by. */
export interface StopState extends StateDigests {
  heartbeatAtStop: number | null;
  /** A post-copy switch: the pages the target holds stale, and where the source serves them. */
  postCopy?: PostCopyEnd;
}

/** The end frame's post-copy part (see endSchema). */
export type PostCopyEnd = NonNullable<End['postCopy']>;

export interface OutgoingOverlay {
  handoffId: string;
  attempt: number;
  /** Ends the stream: the connection is destroyed, and the end frame never leaves after it. */
  signal?: AbortSignal;
  /**
   * Awaited before the end frame and the commit frame behind it, which lets the target run the
   * VM, are handed to the link: from then on only the target's answer may let the source's copy
   * run again, so the source declares it first. Called as the last batch is handed over, so that
   * its fsync runs alongside the device state and the digests rather than after them.
   */
  beforeCommit?: () => Promise<void>;
  /**
   * Resolves once the target acknowledged a batch sent after the VM was paused (at once if none
   * was): the end frame and the commit leave only to a target that answered since the pause. One
   * that went silent before then (frozen, cut off) is never handed a commit it could act on
   * later, so the source may still resume on its own when the connection times out. Its ack
   * comes while the rest of the final epoch is sent; it costs the stop nothing then.
   */
  answeredSincePause?: () => Promise<void>;
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

async function* overlayFrames(
  o: OutgoingOverlay,
  observer: SendObserver,
  holdings: Promise<Holdings>,
  /** `p`, or the target's refusal or the connection's end, whichever comes first. */
  untilReplyFails: <T>(p: Promise<T>) => Promise<T>,
  progress: { commitLeft: boolean },
  /** Counts what the target owes an answer to: every batch, a resumed attempt's hello, the end and the commit. */
  owed: AnswerWatch,
): AsyncGenerator<Buffer> {
  if (o.attempt > 1) owed.expect();
  yield encodeFrame({ type: FrameType.Hello, hello: { protocol: WIRE_PROTOCOL, version: WIRE_VERSION, handoffId: o.handoffId, attempt: o.attempt } });
  // A resumed attempt goes on from what the target holds: nothing is sent before it is known.
  if (o.attempt > 1) await o.reconcile!(await untilReplyFails(holdings));
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
    owed.expect();
    yield frame;
  }
  stopTrace('src batches done');
  // Declared while the device state and the digests are readied, once the target answered.
  const committing = (async () => {
    await untilReplyFails(o.answeredSincePause?.() ?? Promise.resolve());
    await o.beforeCommit?.();
  })();
  committing.catch(() => undefined);
  // From here the target owes the end frame's ack: a target frozen now (its last batch acked, or
  // none sent after the pause) still fails the attempt after the bound. Counted only at the end
  // frame, nothing was owed while the device state's frames sat in a full window (Node holds the
  // socket's idle timeout off during a write) or while the commit was declared, and the source
  // waited out the whole freeze (45.5 s in the fault subset) with its guest paused.
  owed.expect();
  const deviceState = await o.deviceState();
  stopTrace('src device state in hand');
  // It is sent while the VM is stopped: every byte saved here is downtime saved.
  const packed = compressAgainst(o.deviceStateBase, deviceState);
  for (let off = 0; off < packed.length; off += 1 << 20) {
    yield encodeFrame({ type: FrameType.DeviceState, data: packed.subarray(off, off + (1 << 20)) });
  }
  const { memoryDigest, diskDigest, heartbeatAtStop, postCopy } = await o.stopState();
  stopTrace('src stop state in hand');
  o.signal?.throwIfAborted();
  await committing;
  o.signal?.throwIfAborted();
  const end = encodeFrame({
    type: FrameType.End,
    end: {
      batches, chunks, deviceStateBytes: deviceState.length, deviceStateSha256: createHash('sha256').update(deviceState).digest('hex'),
      memoryDigest, diskDigest, heartbeatAtStop, ...(postCopy ? { postCopy } : {}),
    },
  });
  // The commit goes right behind the end frame, in one write, not after the target's ack of it:
  // waiting for the ack would add a round trip to the downtime. The target still runs the VM
  // only on a complete, verified end of the current attempt followed by its commit.
  progress.commitLeft = true;
  // The end's ack is owed since the device state; the commit's confirmation now too.
  owed.expect();
  stopTrace('src end frame yielded');
  yield Buffer.concat([end, encodeFrame({ type: FrameType.Commit, commit: { attempt: o.attempt } })]);
}

/**
 * Streams the encoded overlay, the device state, the end frame and the commit behind it to the
 * target's data plane, and waits for its acknowledgement of the end and its confirmation of the
 * commit. The socket's backpressure paces the encoder: a batch is produced only when the link
 * can take it, so memory stays bounded by the encoder's window.
 */
export async function sendOverlay(endpoint: DataEndpoint, tls: CloudletTls, overlay: OutgoingOverlay, observer: SendObserver = {}): Promise<{ bytesSent: number; ack: Ack }> {
  overlay.signal?.throwIfAborted();
  if (overlay.attempt > 1 && !overlay.reconcile) throw new Error(`attempt ${overlay.attempt} of handoff ${overlay.handoffId} has nothing to reconcile the target's holdings with`);
  // Mutual TLS 1.3 with the site CA; the server must be the target cloudlet the handoff named.
  const socket = connect({
    host: endpoint.host,
    port: endpoint.port,
    cert: tls.cert,
    key: tls.key,
    ca: tls.ca,
    minVersion: 'TLSv1.3',
    checkServerIdentity: expectCloudlet(endpoint.cloudlet),
  });
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
  // A target that goes silent (no RST: a cut link, a frozen host) is noticed, not waited on
  // forever: silent both ways (the handshake, a long scan here), or owing answers it does not give.
  socket.setTimeout(DATA_IDLE_TIMEOUT_MS, () => fail(new HandoffError('PROTOCOL', `the target's data plane at ${endpoint.host}:${endpoint.port} was silent for ${DATA_IDLE_TIMEOUT_MS / 1000} s`)));
  const onAbort = () => fail(new HandoffError('PROTOCOL', `stream cancelled: ${String(overlay.signal?.reason ?? 'aborted')}`));
  overlay.signal?.addEventListener('abort', onAbort, { once: true });
  await new Promise<void>((resolve, reject) => {
    socket.once('secureConnect', resolve);
    socket.once('close', () => reject(failure ?? new Error(`cannot reach the target's data plane at ${endpoint.host}:${endpoint.port}`)));
  });
  socket.setNoDelay(true);
  const owed = new AnswerWatch(DATA_IDLE_TIMEOUT_MS, (ms) =>
    fail(new HandoffError('PROTOCOL', `the target's data plane at ${endpoint.host}:${endpoint.port} owed an answer and was silent for ${(ms / 1000).toFixed(1)} s`)),
  );
  const replies = socket.pipe(decoder);
  const holdings = deferred<Holdings>();
  const acked = deferred<Ack>();
  let gotAck = false;
  /** The target's own answer that it will not run the VM on this attempt (an error frame). */
  let refusal: HandoffError | undefined;
  const progress = { commitLeft: false };
  // Every reply of the target, to the end: the ack of the end frame, then its confirmation of
  // the commit.
  const reply = (async () => {
    for await (const f of replies as AsyncIterable<Frame>) {
      owed.heard();
      if (f.type === FrameType.BatchAck) observer.acked?.(f.batchAck);
      else if (f.type === FrameType.Holdings && overlay.attempt > 1) holdings.resolve(f.holdings);
      else if (f.type === FrameType.Ack && !gotAck) ((gotAck = true), acked.resolve(f.ack));
      else if (f.type === FrameType.Committed && gotAck) return;
      else if (f.type === FrameType.Error) throw (refusal = new HandoffError(knownCode(f.error.code) ?? 'PROTOCOL', `target refused the overlay: ${f.error.message}`));
      else throw new HandoffError('PROTOCOL', `unexpected frame type ${f.type} from the target`);
    }
    throw new HandoffError('PROTOCOL', `target closed the data connection without ${gotAck ? 'confirming the commit' : 'an acknowledgement'}`);
  })();
  reply.catch(() => undefined);
  /** `p`, or the target's refusal or the connection's end, whichever comes first. */
  const untilReplyFails = <T>(p: Promise<T>) => Promise.race([p, reply.then((): never => { throw new HandoffError('PROTOCOL', 'the target confirmed a commit it was never sent'); })]);
  const ackOrFailure = untilReplyFails(acked.promise);
  ackOrFailure.catch(() => undefined);
  try {
    try {
      // end: false keeps the socket writable-open until the target has answered.
      // One frame queued ahead of the socket, not Readable.from's default sixteen: every frame
      // queued here is link time the source runs ahead of the target, and a live handoff pays
      // for it at the stop (the final epoch waits behind it, the target drains it).
      await pipeline(Readable.from(overlayFrames(overlay, observer, holdings.promise, untilReplyFails, progress, owed), { highWaterMark: 1 }), new Throttle(overlay.capMbps ?? (() => null)), socket, { end: false });
    } catch (err) {
      // A target that refuses the stream says why before it closes; that beats "EPIPE".
      const why = await Promise.race([reply.then(() => undefined, (e: unknown) => e), sleep(1_000)]);
      throw why ?? err;
    }
    stopTrace('src pipeline done');
    const ack = await ackOrFailure;
    stopTrace('src ack of end');
    await reply;
    return { bytesSent: socket.bytesWritten, ack };
  } catch (err) {
    // An error frame is the target's answer: it ends the attempt without running the VM there.
    if (refusal) throw refusal;
    // From the commit on the target may run the VM: without its confirmation the outcome is its
    // to say.
    if (progress.commitLeft) {
      throw new HandoffError('HANDOFF_IN_DOUBT', `the end and commit frames of attempt ${overlay.attempt} left for ${endpoint.host}:${endpoint.port} and the target did not confirm the commit (${(failure ?? (err as Error)).message}); only its answer decides now`);
    }
    throw failure ?? err;
  } finally {
    owed.stop();
    overlay.signal?.removeEventListener('abort', onAbort);
    socket.destroy();
  }
}
