import { Transform, type TransformCallback } from 'node:stream';
import { z } from 'zod';
import { modeIdSchema } from '../adaptation/mode.js';
import { HandoffError } from '../errors.js';
import { handoffIdSchema } from '../names.js';
import { decodeHoldings, encodeHoldings, type Holdings } from './holdings.js';
import { MAX_POST_COPY_DISK_BLOCKS } from '../postcopy/stopped-disk-blocks.js';

/**
 * The data plane's framing, version 6: `u32 length | u8 type | payload`, little-endian.
 * Control frames carry JSON checked by a schema. A batch frame carries a JSON header (schema
 * below: sequence, mode, sizes, xxHash64 checksums) and the compressed batch; the target checks
 * both checksums before it applies anything. Anything else is rejected with the reason named.
 * Device state frames carry the zstd-compressed device state in pieces; the end frame gives
 * its raw size and SHA-256, the canonical digests of the memory and disk the source stopped
 * with, which the target checks what it assembled against before it lets anything resume, and
 * the guest's last heartbeat then, past which the target sees it go on.
 * A source's attempt after the first is answered with a holdings frame (see holdings.ts): what
 * the target already assembled, so the stream resumes instead of starting over. The source's
 * commit frame follows its end frame in the same write: the target runs the VM only on it, so
 * until the source sent it, the source may still run its copy on its own. The target
 * confirms the commit (committed frame) once it has recorded it; a source without that
 * confirmation does not know the outcome and asks.
 * After a post-copy switch the target fetches the pages it lacks from the stopped source over
 * the source's own listener: a page hello names the handoff and the channel (faults, or the
 * background push), page requests name runs of pages, and pages frames carry them (see
 * engine/postcopy).
 * (Version 1 carried raw block frames, version 2 an end frame without the state digests, version 3
 * no records relative to a chunk's previous send (xor-prev) and no heartbeat in the end frame,
 * version 5 no holdings, version 6 a bearer token in the hello instead of the cloudlets'
 * certificates, version 7 no post-copy page frames, version 8 no disk blocks in a post-copy;
 * they are not spoken any more.)
 * The frames travel over mutual TLS 1.3 (see cloudlet-tls.ts): the hello names the handoff and
 * the attempt, and who sends it is the certificate the connection was authenticated with.
 */
export const WIRE_PROTOCOL = 'ehoff-wire';
export const WIRE_VERSION = 9;
export const MAX_FRAME_BYTES = 16 << 20;
/** The largest frame a receiver takes before a hello was accepted: a hello is a few hundred bytes. */
export const HELLO_MAX_FRAME_BYTES = 4 << 10;

export enum FrameType {
  Hello = 1,
  DeviceState = 2,
  End = 5,
  Ack = 6,
  Error = 7,
  Batch = 8,
  BatchAck = 9,
  Holdings = 10,
  Commit = 11,
  Committed = 12,
  /** A peer cloudlet asks for one part of a base image this cloudlet holds (see base-transfer.ts). */
  BaseRequest = 13,
  /** One run of non-zero bytes of that part: u64 offset, u32 raw length, zstd data. */
  BaseChunk = 14,
  /** The part is all sent: its size (holes up to it are zeros). */
  BaseEnd = 15,
  /** A post-copy target opens a page channel to the stopped source (see engine/postcopy). */
  PageHello = 16,
  /** Runs of pages the target asks for: on the fault channel, now; on the push channel, its order. */
  PageRequest = 17,
  /** Pages: u32 count, count × u32 page index, count × u64 stop-time xxHash64, then the pages' bytes zstd-compressed as one. */
  Pages = 18,
}

export const helloSchema = z.object({
  protocol: z.literal(WIRE_PROTOCOL),
  version: z.number().int(),
  handoffId: handoffIdSchema,
  /** The source's stream attempt: the target serves one connection per handoff, the newest. */
  attempt: z.number().int().positive(),
});
const hex64 = z.string().regex(/^[0-9a-f]{16}$/, 'is not a 16-digit hex xxHash64');
export const batchHeaderSchema = z.object({
  seq: z.number().int().nonnegative(),
  mode: modeIdSchema,
  chunks: z.number().int().positive().max(4096),
  rawBytes: z.number().int().nonnegative().max(MAX_FRAME_BYTES),
  rawXxh64: hex64,
  payloadBytes: z.number().int().nonnegative().max(MAX_FRAME_BYTES),
  payloadXxh64: hex64,
});
export const batchAckSchema = z.object({
  seq: z.number().int().nonnegative(),
  /** Everything received on this connection so far, frames included. */
  bytesReceived: z.number().int().nonnegative(),
});
/** A run of pages: (first, count). */
const pageRun = z.tuple([z.number().int().nonnegative().max(2 ** 32 - 1), z.number().int().positive().max(2 ** 32 - 1)]);
const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/, 'is not a 64-digit hex SHA-256');
export const endSchema = z.object({
  batches: z.number().int().nonnegative(),
  chunks: z.number().int().nonnegative(),
  deviceStateBytes: z.number().int().nonnegative(),
  deviceStateSha256: sha256Hex,
  memoryDigest: sha256Hex,
  diskDigest: sha256Hex,
  /** The guest's last heartbeat counter at the pause: the target confirms it goes on past it. */
  heartbeatAtStop: z.number().int().nonnegative().nullable(),
  /**
   * Present when the stream switched to post-copy: the memory pages the target holds stale (the
   * memory digest above is of what it holds, stale pages included), which it fetches from the
   * source's own data plane at `host:port` once it runs the VM. `staleDisk`: the disk blocks it
   * fetches too, with each one's SHA-256 as stopped, in block order, base64 of 32 bytes each (32
   * zero bytes: an all-zero block) — the disk digest above is the stopped disk's, which the
   * target checks with these standing in for what it lacks. On the page channels disk block b is
   * chunk memoryPages + b (postcopy/plan.ts).
   */
  postCopy: z
    .object({
      staleRuns: z.array(pageRun).max(1_000_000),
      staleDisk: z
        .object({ runs: z.array(pageRun).max(MAX_POST_COPY_DISK_BLOCKS), sha256: z.string().base64().max(Math.ceil((MAX_POST_COPY_DISK_BLOCKS * 32) / 3) * 4) })
        .refine((d) => d.runs.reduce((n, [, count]) => n + count, 0) * 32 === Buffer.from(d.sha256, 'base64').length, 'names as many blocks as it gives hashes')
        .optional(),
      host: z.string().min(1).max(255),
      port: z.number().int().min(1).max(65535),
    })
    .optional(),
});
export const ackSchema = z.object({
  batches: z.number().int().nonnegative(),
  chunks: z.number().int().nonnegative(),
  deviceStateBytes: z.number().int().nonnegative(),
  bytesReceived: z.number().int().nonnegative(),
});
/** The source's word that the target may run the VM: sent once, right behind its end frame. */
export const commitSchema = z.object({ attempt: z.number().int().positive() });
/** A refusal, with the engine's error code when it has one: the source's retry depends on it. */
/**
 * A refusal's reason, as the peer wrote it: outside text, so bounded (it is quoted in the
 * receiver's errors, and from there in history); longer is cut, not refused.
 */
export const MAX_ERROR_MESSAGE_CHARS = 500;
export const errorSchema = z.object({
  message: z.string().transform((m) => (m.length > MAX_ERROR_MESSAGE_CHARS ? `${m.slice(0, MAX_ERROR_MESSAGE_CHARS)}…` : m)),
  code: z.string().max(40).optional(),
});

/** The parts of a base image a peer may ask for: its manifest and the files it names. */
export const BASE_PARTS = ['manifest', 'kernel', 'initrd', 'deviceState', 'memory', 'disk', 'diskBlockHashes'] as const;
export type BasePart = (typeof BASE_PARTS)[number];
export const baseRequestSchema = z.object({
  protocol: z.literal(WIRE_PROTOCOL),
  version: z.number().int(),
  baseImageId: z.string().regex(/^base-[0-9a-f]{16}$/),
  part: z.enum(BASE_PARTS),
  /** Resume: send nothing before this byte (what the fetcher already has). */
  offset: z.number().int().nonnegative(),
});
export const baseEndSchema = z.object({ sizeBytes: z.number().int().nonnegative() });
/** The two channels of a post-copy: requested pages must not queue behind the background push. */
export const PAGE_CHANNELS = ['fault', 'push'] as const;
export type PageChannel = (typeof PAGE_CHANNELS)[number];
export const pageHelloSchema = z.object({
  protocol: z.literal(WIRE_PROTOCOL),
  version: z.number().int(),
  handoffId: handoffIdSchema,
  channel: z.enum(PAGE_CHANNELS),
});
/** The most pages one pages frame carries (256 KiB raw), so a fault's answer never waits behind a large one. */
export const MAX_PAGES_PER_FRAME = 64;
export const pageRequestSchema = z.object({ runs: z.array(pageRun).max(1_000_000) });
export interface PagesPayload {
  indices: Uint32Array;
  /**
   * Each page's xxHash64 as the source's stop-time scan left it, not as the bytes sent hash:
   * the target refuses a page that is not what the source stopped with.
   */
  stopHashes: BigUint64Array;
  /** The pages' bytes, zstd-compressed as one; checked page by page against the stop-time hashes. */
  packed: Buffer;
}
export interface BaseChunk {
  offset: number;
  rawBytes: number;
  data: Buffer;
}

export type BaseRequest = z.infer<typeof baseRequestSchema>;
export type Hello = z.infer<typeof helloSchema>;
export type BatchHeader = z.infer<typeof batchHeaderSchema>;
export type BatchAck = z.infer<typeof batchAckSchema>;
export type End = z.infer<typeof endSchema>;
export type Ack = z.infer<typeof ackSchema>;

export type Frame =
  | { type: FrameType.Hello; hello: Hello }
  | { type: FrameType.DeviceState; data: Buffer }
  | { type: FrameType.Batch; header: BatchHeader; payload: Buffer }
  | { type: FrameType.BatchAck; batchAck: BatchAck }
  | { type: FrameType.End; end: End }
  | { type: FrameType.Ack; ack: Ack }
  | { type: FrameType.Error; error: z.infer<typeof errorSchema> }
  | { type: FrameType.Holdings; holdings: Holdings }
  | { type: FrameType.Commit; commit: z.infer<typeof commitSchema> }
  | { type: FrameType.Committed; commit: z.infer<typeof commitSchema> }
  | { type: FrameType.BaseRequest; request: z.infer<typeof baseRequestSchema> }
  | { type: FrameType.BaseChunk; chunk: BaseChunk }
  | { type: FrameType.BaseEnd; end: z.infer<typeof baseEndSchema> }
  | { type: FrameType.PageHello; hello: z.infer<typeof pageHelloSchema> }
  | { type: FrameType.PageRequest; request: z.infer<typeof pageRequestSchema> }
  | { type: FrameType.Pages; pages: PagesPayload };

function frame(type: FrameType, payload: Buffer): Buffer {
  if (payload.length + 1 > MAX_FRAME_BYTES) throw new Error(`frame of ${payload.length} bytes exceeds ${MAX_FRAME_BYTES}`);
  const header = Buffer.alloc(5);
  header.writeUInt32LE(payload.length + 1, 0);
  header.writeUInt8(type, 4);
  return Buffer.concat([header, payload]);
}

export function encodeFrame(f: Frame): Buffer {
  switch (f.type) {
    case FrameType.Hello:
      return frame(f.type, Buffer.from(JSON.stringify(f.hello)));
    case FrameType.End:
      return frame(f.type, Buffer.from(JSON.stringify(f.end)));
    case FrameType.Ack:
      return frame(f.type, Buffer.from(JSON.stringify(f.ack)));
    case FrameType.Error:
      return frame(f.type, Buffer.from(JSON.stringify(f.error)));
    case FrameType.DeviceState:
      return frame(f.type, f.data);
    case FrameType.BatchAck:
      return frame(f.type, Buffer.from(JSON.stringify(f.batchAck)));
    case FrameType.Holdings:
      return frame(f.type, encodeHoldings(f.holdings));
    case FrameType.Commit:
    case FrameType.Committed:
      return frame(f.type, Buffer.from(JSON.stringify(f.commit)));
    case FrameType.BaseRequest:
      return frame(f.type, Buffer.from(JSON.stringify(f.request)));
    case FrameType.BaseEnd:
      return frame(f.type, Buffer.from(JSON.stringify(f.end)));
    case FrameType.PageHello:
      return frame(f.type, Buffer.from(JSON.stringify(f.hello)));
    case FrameType.PageRequest:
      return frame(f.type, Buffer.from(JSON.stringify(f.request)));
    case FrameType.Pages: {
      const n = f.pages.indices.length;
      if (f.pages.stopHashes.length !== n) throw new Error(`pages frame: ${n} pages, ${f.pages.stopHashes.length} hashes`);
      const head = Buffer.alloc(4 + 12 * n);
      head.writeUInt32LE(n, 0);
      for (let k = 0; k < n; k++) {
        head.writeUInt32LE(f.pages.indices[k]!, 4 + 4 * k);
        head.writeBigUInt64LE(f.pages.stopHashes[k]!, 4 + 4 * n + 8 * k);
      }
      return frame(f.type, Buffer.concat([head, f.pages.packed]));
    }
    case FrameType.BaseChunk: {
      const head = Buffer.alloc(12);
      head.writeBigUInt64LE(BigInt(f.chunk.offset), 0);
      head.writeUInt32LE(f.chunk.rawBytes, 8);
      return frame(f.type, Buffer.concat([head, f.chunk.data]));
    }
    case FrameType.Batch: {
      if (f.payload.length !== f.header.payloadBytes) throw new Error(`batch payload is ${f.payload.length} bytes, header says ${f.header.payloadBytes}`);
      const header = Buffer.from(JSON.stringify(f.header));
      const len = Buffer.alloc(4);
      len.writeUInt32LE(header.length, 0);
      return frame(f.type, Buffer.concat([len, header, f.payload]));
    }
  }
}

function parseJson<T>(what: string, schema: z.ZodType<T>, payload: Buffer): T {
  let value: unknown;
  try {
    value = JSON.parse(payload.toString('utf8'));
  } catch {
    throw new HandoffError('PROTOCOL', `${what} frame is not valid JSON`);
  }
  const r = schema.safeParse(value);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new HandoffError('PROTOCOL', `${what} frame: field '${issue?.path.join('.') || '(root)'}' ${issue?.message ?? 'invalid'}`);
  }
  return r.data;
}

export function decodePayload(type: number, payload: Buffer): Frame {
  switch (type) {
    case FrameType.Hello: {
      const hello = parseJson('hello', helloSchema, payload);
      if (hello.version !== WIRE_VERSION) {
        throw new HandoffError('PROTOCOL', `hello frame: field 'version' is ${hello.version}; this side speaks version ${WIRE_VERSION}`);
      }
      return { type, hello };
    }
    case FrameType.End:
      return { type, end: parseJson('end', endSchema, payload) };
    case FrameType.Ack:
      return { type, ack: parseJson('ack', ackSchema, payload) };
    case FrameType.Error:
      return { type, error: parseJson('error', errorSchema, payload) };
    case FrameType.DeviceState:
      return { type, data: payload };
    case FrameType.BatchAck:
      return { type, batchAck: parseJson('batch ack', batchAckSchema, payload) };
    case FrameType.Holdings:
      return { type, holdings: decodeHoldings(payload) };
    case FrameType.Commit:
      return { type, commit: parseJson('commit', commitSchema, payload) };
    case FrameType.Committed:
      return { type, commit: parseJson('committed', commitSchema, payload) };
    case FrameType.BaseRequest: {
      const request = parseJson('base request', baseRequestSchema, payload);
      if (request.version !== WIRE_VERSION) throw new HandoffError('PROTOCOL', `base request speaks version ${request.version}; this cloudlet speaks ${WIRE_VERSION}`);
      return { type, request };
    }
    case FrameType.BaseEnd:
      return { type, end: parseJson('base end', baseEndSchema, payload) };
    case FrameType.PageHello: {
      const hello = parseJson('page hello', pageHelloSchema, payload);
      if (hello.version !== WIRE_VERSION) throw new HandoffError('PROTOCOL', `page hello speaks version ${hello.version}; this cloudlet speaks ${WIRE_VERSION}`);
      return { type, hello };
    }
    case FrameType.PageRequest:
      return { type, request: parseJson('page request', pageRequestSchema, payload) };
    case FrameType.Pages: {
      if (payload.length < 4) throw new HandoffError('PROTOCOL', 'pages frame is truncated');
      const count = payload.readUInt32LE(0);
      if (count < 1 || count > MAX_PAGES_PER_FRAME || payload.length < 4 + 12 * count) throw new HandoffError('PROTOCOL', `pages frame: count ${count} is outside 1..${MAX_PAGES_PER_FRAME} or runs past the frame`);
      const indices = new Uint32Array(count);
      const stopHashes = new BigUint64Array(count);
      for (let k = 0; k < count; k++) {
        indices[k] = payload.readUInt32LE(4 + 4 * k);
        stopHashes[k] = payload.readBigUInt64LE(4 + 4 * count + 8 * k);
      }
      return { type, pages: { indices, stopHashes, packed: payload.subarray(4 + 12 * count) } };
    }
    case FrameType.BaseChunk: {
      if (payload.length < 12) throw new HandoffError('PROTOCOL', 'base chunk frame is truncated');
      const offset = Number(payload.readBigUInt64LE(0));
      if (!Number.isSafeInteger(offset)) throw new HandoffError('PROTOCOL', `base chunk offset ${offset} is out of range`);
      return { type, chunk: { offset, rawBytes: payload.readUInt32LE(8), data: payload.subarray(12) } };
    }
    case FrameType.Batch: {
      if (payload.length < 4) throw new HandoffError('PROTOCOL', "batch frame: field 'headerLength' is truncated");
      const headerLength = payload.readUInt32LE(0);
      if (4 + headerLength > payload.length) throw new HandoffError('PROTOCOL', `batch frame: header of ${headerLength} bytes runs past the frame`);
      const header = parseJson('batch', batchHeaderSchema, payload.subarray(4, 4 + headerLength));
      const body = payload.subarray(4 + headerLength);
      if (body.length !== header.payloadBytes) {
        throw new HandoffError('PROTOCOL', `batch ${header.seq}: field 'payloadBytes' says ${header.payloadBytes}, frame holds ${body.length}`);
      }
      return { type, header, payload: body };
    }
    default:
      throw new HandoffError('PROTOCOL', `unknown frame type ${type}`);
  }
}

/** Bytes in, frames out; rejects oversized frames before buffering them. */
export class FrameDecoder extends Transform {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private framesOut = 0;
  bytesIn = 0;

  /**
   * @param firstFrameMaxBytes the largest first frame taken (later ones: MAX_FRAME_BYTES). A
   *   receiver that first wants to know who speaks (the hello) keeps it small: the limit is the
   *   decoder's own, so it holds even for the frames that arrive in the hello's read.
   */
  constructor(private readonly firstFrameMaxBytes = MAX_FRAME_BYTES) {
    super({ readableObjectMode: true });
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.bytesIn += chunk.length;
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    try {
      for (;;) {
        if (this.pendingBytes < 4) break;
        const length = this.peekBytes(4).readUInt32LE(0);
        const limit = this.framesOut === 0 ? this.firstFrameMaxBytes : MAX_FRAME_BYTES;
        if (length < 1 || length > limit) throw new HandoffError('PROTOCOL', `frame length ${length} is outside 1..${limit}`);
        if (this.pendingBytes < 4 + length) break;
        const whole = this.takeBytes(4 + length);
        this.framesOut++;
        this.push(decodePayload(whole.readUInt8(4), whole.subarray(5)));
      }
      done();
    } catch (err) {
      done(err as Error);
    }
  }

  override _flush(done: TransformCallback): void {
    done(this.pendingBytes > 0 ? new HandoffError('PROTOCOL', `stream ended inside a frame (${this.pendingBytes} bytes left over)`) : null);
  }

  /**
   * The first `n` bytes (n ≤ pendingBytes). Leading pieces shorter than that are merged once,
   * not the whole queue on every read: a peer that sends a frame a few bytes at a time would
   * otherwise cost time quadratic in the frame's size (found by the fuzzer).
   */
  private peekBytes(n: number): Buffer {
    while (this.pending[0]!.length < n) this.pending.splice(0, 2, Buffer.concat([this.pending[0]!, this.pending[1]!]));
    return this.pending[0]!.subarray(0, n);
  }

  private takeBytes(n: number): Buffer {
    const all = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending);
    const rest = all.subarray(n);
    this.pending = rest.length ? [rest] : [];
    this.pendingBytes = rest.length;
    return all.subarray(0, n);
  }
}
