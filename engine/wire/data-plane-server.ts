import { stopTrace } from '../stop-trace.js';
import { createHash } from 'node:crypto';
import { createServer, type Server, type TLSSocket } from 'node:tls';
import type { Socket } from 'node:net';
import { zstdBounded } from '../pipeline/codecs.js';
import { HandoffError } from '../errors.js';
import { FrameDecoder, FrameType, HELLO_MAX_FRAME_BYTES, encodeFrame, type Ack, type BatchHeader, type BaseRequest, type Frame, type PagesPayload } from './frames.js';
import { namesCloudlet, type CloudletTls } from './cloudlet-tls.js';
import { HandshakeLimiter } from './handshake-limiter.js';
import { writeWithBackpressure as writeToStream } from './write-with-backpressure.js';
import type { Holdings } from './holdings.js';
import { DATA_IDLE_TIMEOUT_MS, type StopState } from './overlay-sender.js';

const MAX_DEVICE_STATE_BYTES = 64 << 20;
/** How long a refused connection stays up after its error frame, which it then cannot delay. */
const REFUSED_LINGER_MS = 1_000;
/** Connections in their TLS handshake at once, from one address and in all; more are closed at once. */
export const MAX_PENDING_HANDSHAKES_PER_ADDRESS = 16;
export const MAX_PENDING_HANDSHAKES = 1024;
/** A handshake not done by then is dropped. A WAN handshake takes two round trips. */
export const HANDSHAKE_TIMEOUT_MS = 5_000;
/** TCP keepalive on a quiet post-copy page channel: a target gone for good is noticed. */
const PAGE_CHANNEL_KEEPALIVE_MS = 5_000;
/**
 * The one answer to a hello this cloudlet does not take — no such handoff, another cloudlet's
 * certificate: the peer learns nothing about which handoffs exist here (the log says which).
 */
const NOT_EXPECTED = 'no handoff here expects this connection';

/** A stopped VM's pages a post-copy target may fetch here (see engine/postcopy). */
export interface PageSource {
  /** The cloudlet the handoff went to: only its certificate opens a page channel. */
  target: string;
  /** A fault channel's request, answered at once. */
  fault(runs: ReadonlyArray<readonly [number, number]>, send: (pages: PagesPayload) => Promise<void>): Promise<void>;
  /** A push channel: everything in `runs` not sent since, then done. */
  pushAll(runs: ReadonlyArray<readonly [number, number]>, send: (pages: PagesPayload) => Promise<void>, signal?: AbortSignal): Promise<void>;
}

/** Where one incoming overlay is written as it arrives. */
export interface OverlaySink {
  /** The cloudlet the stream must come from: its certificate's name is checked at the hello. */
  source: string;
  /** The base image's device state: the dictionary the VM's device state is compressed with. */
  deviceStateBase: Uint8Array;
  /**
   * A new connection for this handoff, of the source's attempt `attempt`. Throws to refuse it
   * (the target has committed, for one). For an attempt after the first, returns what the target
   * holds already, which the source reconciles with before it sends anything.
   */
  begin(attempt: number): Promise<Holdings | undefined>;
  /** The attempt's whole device state, decompressed, written over any earlier attempt's. */
  writeDeviceState(state: Buffer): Promise<void>;
  /** Verifies and applies one batch; returns the chunks it held. */
  applyBatch(header: BatchHeader, payload: Buffer): Promise<number>;
  /**
   * Called once the whole overlay arrived and its counts checked out, with the state the source
   * stopped with: the digests the assembled memory and disk must match, its last heartbeat.
   * Nothing may run on it yet: the source's commit frame (`granted`) comes after the ack.
   */
  complete(ack: Ack, stopped: StopState, attempt: number, deviceStateSha256: string): Promise<void>;
  /**
   * The source sent its commit for the end of `attempt`: the target may run the VM now. False if
   * that end no longer counts (a newer attempt withdrew it): then nothing runs on it.
   */
  granted(attempt: number): Promise<boolean>;
  /**
   * One connection of this handoff failed (before its commit frame, if its end arrived); a
   * newer attempt may still connect.
   */
  fail(err: Error, attempt: number): void;
}

/** The connection serving a handoff now: the newest attempt's. */
interface CurrentConnection {
  attempt: number;
  socket: TLSSocket;
}

/**
 * A cloudlet's data-plane listener, over mutual TLS 1.3 with the site CA. Each connection names
 * its handoff in its first frame and must come from that handoff's source cloudlet (its
 * certificate's name); batches are applied in sequence and acknowledged one by one,
 * which is how the source measures the network's throughput. The end frame is acknowledged, and
 * the source's commit frame after it is what lets the target run the VM.
 */
export class DataPlaneServer {
  private readonly sinks = new Map<string, OverlaySink>();
  /** Stopped VMs' pages served to their post-copy targets, by handoff. */
  private readonly pageSources = new Map<string, PageSource>();
  private readonly current = new Map<string, CurrentConnection>();
  private server?: Server;

  /** Every accepted connection, so that a stop ends them rather than waits out their timeouts. */
  private readonly open = new Set<Socket>();
  private readonly handshakes = new HandshakeLimiter(MAX_PENDING_HANDSHAKES_PER_ADDRESS, MAX_PENDING_HANDSHAKES);
  /** Serves a part of a base image to a peer cloudlet (see base-transfer.ts); none: base requests are refused. */
  private baseParts?: (request: BaseRequest, send: (f: Frame) => Promise<void>) => Promise<void>;
  private handoffsKnown: Promise<void> = Promise.resolve();
  /** Why connections were turned away, by reason: for the worker's log and the security tests. */
  readonly refused = new Map<string, number>();

  constructor(private readonly host: string, private readonly tls: CloudletTls, private readonly port = 0, private readonly log: (line: string) => void = () => undefined) {}

  async start(): Promise<{ host: string; port: number }> {
    const server = createServer(
      {
        cert: this.tls.cert,
        key: this.tls.key,
        ca: this.tls.ca,
        requestCert: true,
        rejectUnauthorized: true,
        minVersion: 'TLSv1.3',
        handshakeTimeout: HANDSHAKE_TIMEOUT_MS,
        allowHalfOpen: true,
      },
      (socket) => void this.serve(socket),
    );
    // What a peer without a certificate can make this process hold is bounded (see HandshakeLimiter).
    server.on('connection', (raw: Socket) => {
      this.open.add(raw);
      raw.once('close', () => this.open.delete(raw));
      if (this.handshakes.admit(raw)) return;
      this.count('too many pending handshakes');
      raw.destroy();
    });
    server.on('tlsClientError', (err, socket) => {
      this.count(`handshake: ${err.message.slice(0, 120)}`);
      socket.destroy();
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, this.host, () => resolve());
    });
    server.on('error', (err) => process.emitWarning(`data plane listener: ${err.message}`));
    this.server = server;
    return this.address();
  }

  address(): { host: string; port: number } {
    const a = this.server?.address();
    if (!a || typeof a === 'string') throw new Error('data plane server is not listening');
    return { host: this.host, port: a.port };
  }

  /** Base images travel over this listener too: any cloudlet of the site may fetch one this one holds. */
  serveBaseImages(serve: (request: BaseRequest, send: (f: Frame) => Promise<void>) => Promise<void>): void {
    this.baseParts = serve;
  }

  /**
   * Hellos wait for `known` before they are matched against the handoffs expected here. A
   * restarted worker listens before it has taken up the incoming handoffs its predecessor left;
   * a source's retried attempt arriving in between is served once they are known, not refused
   * as unknown (a refusal is final for the handoff). Call before `start`.
   */
  holdHellosUntil(known: Promise<unknown>): void {
    this.handoffsKnown = known.then(
      () => undefined,
      () => undefined,
    );
  }

  expect(handoffId: string, sink: OverlaySink): void {
    this.sinks.set(handoffId, sink);
  }

  /** Lets the handoff's target fetch the stopped VM's pages it lacks, until `stopServingPages`. */
  servePages(handoffId: string, source: PageSource): void {
    this.pageSources.set(handoffId, source);
  }

  stopServingPages(handoffId: string): void {
    this.pageSources.delete(handoffId);
  }

  forget(handoffId: string): void {
    this.sinks.delete(handoffId);
    this.current.get(handoffId)?.socket.destroy();
    this.current.delete(handoffId);
  }

  /** Stops listening and ends every connection, a handshake still in progress too. */
  async stop(): Promise<void> {
    const closed = new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    for (const raw of this.open) raw.destroy();
    await closed;
  }

  private async servePageChannel(socket: TLSSocket, decoder: FrameDecoder, channel: 'fault' | 'push', handoffId: string, pages: PageSource): Promise<void> {
    this.log(`data plane: post-copy ${channel} channel of handoff ${handoffId} from ${socket.remoteAddress}`);
    try {
      await pageChannel(socket, decoder, channel, pages);
    } catch (err) {
      this.log(`data plane: post-copy ${channel} channel of handoff ${handoffId} ended: ${(err as Error).message.slice(0, 300)}`);
      throw err;
    }
  }

  private count(reason: string): void {
    this.refused.set(reason, (this.refused.get(reason) ?? 0) + 1);
  }

  private async serve(socket: TLSSocket): Promise<void> {
    this.handshakes.secured(socket);
    socket.setNoDelay(true);
    // The first frame is the hello, small: a peer the site CA vouches for still says first which
    // handoff it streams, before this side buffers a batch for it.
    const decoder = new FrameDecoder(HELLO_MAX_FRAME_BYTES);
    decoder.on('error', () => undefined);
    // A peer's reset, a cut link, a malformed frame: each ends this connection, never the process.
    socket.on('error', (err) => decoder.destroy(new HandoffError('PROTOCOL', `data connection from ${socket.remoteAddress} failed: ${err.message}`)));
    socket.setTimeout(DATA_IDLE_TIMEOUT_MS, () => {
      decoder.destroy(new HandoffError('PROTOCOL', `the source was silent for ${DATA_IDLE_TIMEOUT_MS / 1000} s`));
      socket.destroy();
    });
    socket.on('close', () => decoder.destroy());
    socket.pipe(decoder);
    let sink: OverlaySink | undefined;
    let attempt = 0;
    let handoffId = '';
    /** The end frame arrived and was acknowledged: only the source's commit may follow. */
    let ended = false;
    /** Frames of an attempt a newer one superseded are not applied. */
    const superseded = () => this.current.get(handoffId)?.socket !== socket;
    try {
      const counts = { batches: 0, chunks: 0, deviceStateBytes: 0 };
      const packedDeviceState: Buffer[] = [];
      let packedDeviceStateBytes = 0;
      const deviceStateHash = createHash('sha256');
      for await (const f of decoder as AsyncIterable<Frame>) {
        if (!sink && f.type === FrameType.BaseRequest) {
          // A peer of the site (the TLS handshake required a certificate of its CA) fetching a
          // base image: the data goes one way, paced by the socket's backpressure.
          if (!this.baseParts) throw new HandoffError('BASE_IMAGE_MISSING', 'this cloudlet serves no base images');
          const r = f.request;
          this.log(`data plane: base image ${r.baseImageId} part ${r.part} from byte ${r.offset} to ${socket.getPeerX509Certificate()?.subjectAltName ?? '?'} at ${socket.remoteAddress}`);
          await this.baseParts(r, (out) => writeWithBackpressure(socket, encodeFrame(out)));
          socket.end();
          return;
        }
        if (!sink && f.type === FrameType.PageHello) {
          await this.handoffsKnown;
          const pages = this.pageSources.get(f.hello.handoffId);
          const peer = socket.getPeerX509Certificate();
          if (!pages || !peer || !namesCloudlet(peer, pages.target)) {
            const why = !pages ? 'no pages served for that handoff' : `not from ${pages.target}`;
            this.count(why);
            this.log(`data plane: refused a page channel for handoff ${f.hello.handoffId} from ${peer?.subjectAltName ?? 'no certificate'} at ${socket.remoteAddress}: ${why}`);
            throw new HandoffError('HANDOFF_NOT_FOUND', NOT_EXPECTED);
          }
          await this.servePageChannel(socket, decoder, f.hello.channel, f.hello.handoffId, pages);
          return;
        }
        if (!sink) {
          if (f.type !== FrameType.Hello) throw new HandoffError('PROTOCOL', `first frame must be hello, got type ${f.type}`);
          await this.handoffsKnown;
          const expected = this.sinks.get(f.hello.handoffId);
          const peer = socket.getPeerX509Certificate();
          if (!expected || !peer || !namesCloudlet(peer, expected.source)) {
            const why = !expected ? 'unknown handoff' : `not from ${expected.source}`;
            this.count(why);
            this.log(`data plane: refused a hello for handoff ${f.hello.handoffId} from ${peer?.subjectAltName ?? 'no certificate'} at ${socket.remoteAddress}: ${why}`);
            throw new HandoffError('HANDOFF_NOT_FOUND', NOT_EXPECTED);
          }
          const now = this.current.get(f.hello.handoffId);
          if (now && now.attempt > f.hello.attempt) {
            throw new HandoffError('PROTOCOL', `attempt ${f.hello.attempt} of handoff ${f.hello.handoffId} is superseded by attempt ${now.attempt}`);
          }
          // A source's retry is a newer attempt; a second connection of the one being served is
          // not, and does not cut it off.
          if (now && now.attempt === f.hello.attempt) {
            throw new HandoffError('PROTOCOL', `attempt ${f.hello.attempt} of handoff ${f.hello.handoffId} is already connected; only a newer attempt takes over`);
          }
          // One connection per handoff: the newer attempt wins, the older is cut off.
          now?.socket.destroy();
          handoffId = f.hello.handoffId;
          attempt = f.hello.attempt;
          this.log(`data plane: handoff ${handoffId} attempt ${attempt} from ${peer.subjectAltName} at ${socket.remoteAddress}${now ? ` (cut off attempt ${now.attempt})` : ''}`);
          this.current.set(handoffId, { attempt, socket });
          sink = expected;
          const holdings = await sink.begin(attempt);
          if (holdings && !superseded()) socket.write(encodeFrame({ type: FrameType.Holdings, holdings }));
          continue;
        }
        if (superseded()) throw new HandoffError('PROTOCOL', `attempt ${attempt} of handoff ${handoffId} was superseded`);
        if (ended && f.type !== FrameType.Commit) throw new HandoffError('PROTOCOL', `frame type ${f.type} after the end frame of attempt ${attempt}; only its commit may follow`);
        switch (f.type) {
          case FrameType.DeviceState:
            stopTrace('dst device state frame');
            // zstd-compressed against the base's device state on the wire; small (about 330 KB
            // raw, a few KB packed), so it is held until the end.
            packedDeviceState.push(f.data);
            packedDeviceStateBytes += f.data.length;
            if (packedDeviceStateBytes > MAX_DEVICE_STATE_BYTES) throw new HandoffError('PROTOCOL', `device state exceeds ${MAX_DEVICE_STATE_BYTES} bytes`);
            break;
          case FrameType.Batch:
            stopTrace(`dst batch ${f.header.seq} arrived`);
            if (f.header.seq !== counts.batches) throw new HandoffError('PROTOCOL', `batch ${f.header.seq} arrived where batch ${counts.batches} was due`);
            counts.chunks += await sink.applyBatch(f.header, f.payload);
            counts.batches++;
            stopTrace(`dst batch ${f.header.seq} applied`);
            socket.write(encodeFrame({ type: FrameType.BatchAck, batchAck: { seq: f.header.seq, bytesReceived: decoder.bytesIn } }));
            break;
          case FrameType.End: {
            stopTrace('dst end arrived');
            const e = f.end;
            if (packedDeviceState.length) {
              let raw: Buffer;
              if (e.deviceStateBytes > MAX_DEVICE_STATE_BYTES) throw new HandoffError('PROTOCOL', `device state of ${e.deviceStateBytes} bytes exceeds ${MAX_DEVICE_STATE_BYTES}`);
              try {
                // No bigger than the end frame says: a bomb is refused as it passes that size.
                raw = zstdBounded(Buffer.concat(packedDeviceState), e.deviceStateBytes, sink.deviceStateBase);
              } catch (err) {
                throw new HandoffError('STATE_MISMATCH', `device state does not decompress: ${(err as Error).message}`);
              }
              counts.deviceStateBytes = raw.length;
              deviceStateHash.update(raw);
              // Only the current attempt writes the one device-state file.
              if (superseded()) throw new HandoffError('PROTOCOL', `attempt ${attempt} of handoff ${handoffId} was superseded before its device state`);
              await sink.writeDeviceState(raw);
            }
            const mismatch =
              e.batches !== counts.batches ? `batches: sent ${e.batches}, received ${counts.batches}` :
              e.chunks !== counts.chunks ? `chunks: sent ${e.chunks}, received ${counts.chunks}` :
              e.deviceStateBytes !== counts.deviceStateBytes ? `device state: sent ${e.deviceStateBytes} bytes, received ${counts.deviceStateBytes}` :
              e.deviceStateSha256 !== deviceStateHash.digest('hex') ? "device state: SHA-256 differs from the sender's" : undefined;
            if (mismatch) throw new HandoffError('STATE_MISMATCH', `overlay arrived incomplete: ${mismatch}`);
            const ack: Ack = { ...counts, bytesReceived: decoder.bytesIn };
            // A newer attempt may have connected while the device state was written: then this
            // end frame is no longer the current attempt's, and nothing may commit on it.
            if (superseded()) throw new HandoffError('PROTOCOL', `attempt ${attempt} of handoff ${handoffId} was superseded before its end`);
            await sink.complete(ack, { memoryDigest: e.memoryDigest, diskDigest: e.diskDigest, heartbeatAtStop: e.heartbeatAtStop, ...(e.postCopy ? { postCopy: e.postCopy } : {}) }, attempt, e.deviceStateSha256);
            socket.write(encodeFrame({ type: FrameType.Ack, ack }));
            stopTrace('dst end complete, ack written');
            ended = true;
            break;
          }
          case FrameType.Commit:
            stopTrace('dst commit arrived');
            if (!ended) throw new HandoffError('PROTOCOL', `a commit frame before the end frame of attempt ${attempt}`);
            if (f.commit.attempt !== attempt) throw new HandoffError('PROTOCOL', `a commit frame for attempt ${f.commit.attempt} on the connection of attempt ${attempt}`);
            if (!(await sink.granted(attempt))) throw new HandoffError('PROTOCOL', `the commit of attempt ${attempt} came after its end was withdrawn here`);
            stopTrace('dst granted');
            socket.end(encodeFrame({ type: FrameType.Committed, commit: { attempt } }));
            return;
          default:
            throw new HandoffError('PROTOCOL', `unexpected frame type ${f.type} in an overlay stream`);
        }
      }
      throw new HandoffError('PROTOCOL', ended ? `the source closed attempt ${attempt} after its end frame without committing` : 'overlay stream ended before its end frame');
    } catch (err) {
      const e = err instanceof Error ? err : new Error(String(err));
      if (sink) this.log(`data plane: handoff ${handoffId} attempt ${attempt} ended: ${e.message.slice(0, 300)}`);
      if (sink && !superseded()) sink.fail(e, attempt);
      if (!socket.destroyed) {
        socket.end(encodeFrame({ type: FrameType.Error, error: { message: e.message, ...(e instanceof HandoffError ? { code: e.code } : {}) } }));
        // Nothing more is read from it: a peer that keeps it open (or keeps sending) does not
        // hold it until the idle timeout; a second is the error frame's time to leave.
        setTimeout(() => socket.destroy(), REFUSED_LINGER_MS).unref();
      }
    } finally {
      if (!superseded()) this.current.delete(handoffId);
    }
  }
}

/**
 * One post-copy page channel, after its hello: on the fault channel every request is answered at
 * once, for as long as the target keeps it open; on the push channel the first request is what
 * the target still lacks, pushed to the end. A page channel is quiet while the guest faults
 * nothing, so the idle timeout gives way to TCP keepalive; the target ends it.
 */
async function pageChannel(socket: TLSSocket, decoder: FrameDecoder, channel: 'fault' | 'push', pages: PageSource): Promise<void> {
  socket.setTimeout(0);
  socket.setKeepAlive(true, PAGE_CHANNEL_KEEPALIVE_MS);
  const send = (p: PagesPayload) => writeWithBackpressure(socket, encodeFrame({ type: FrameType.Pages, pages: p }));
  const stop = new AbortController();
  socket.once('close', () => stop.abort(new Error('the page channel closed')));
  for await (const f of decoder as AsyncIterable<Frame>) {
    if (f.type !== FrameType.PageRequest) throw new HandoffError('PROTOCOL', `unexpected frame type ${f.type} on a post-copy ${channel} channel`);
    if (channel === 'fault') {
      await pages.fault(f.request.runs, send);
      continue;
    }
    await pages.pushAll(f.request.runs, send, stop.signal);
    socket.end();
    return;
  }
}

/** Writes a frame with the socket's backpressure; fails once the peer closed the connection. */
function writeWithBackpressure(socket: TLSSocket, data: Buffer): Promise<void> {
  return writeToStream(socket, data, () => new HandoffError('PROTOCOL', 'the peer closed the connection'));
}
