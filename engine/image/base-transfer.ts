import { access, mkdir, open, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { BLOCK_SIZE } from '../blocks.js';
import { HandoffError, knownCode } from '../errors.js';
import { compressBatch, zstdBounded } from '../pipeline/codecs.js';
import { expectCloudlet, type CloudletTls } from '../wire/cloudlet-tls.js';
import { FrameDecoder, FrameType, WIRE_PROTOCOL, WIRE_VERSION, encodeFrame, type BasePart, type Frame } from '../wire/frames.js';
import type { DataEndpoint } from '../wire/overlay-sender.js';
import { DATA_IDLE_TIMEOUT_MS } from '../wire/overlay-sender.js';
import { FILE_NAMES, MANIFEST_FILE, baseImageManifestSchema, type BaseImageManifest } from './base-image.js';
import { baseImageIdOf, type ImageCache } from './image-cache.js';
import { digestOfFile, sha256OfFile } from './image-digest.js';

/**
 * Base images that travel: a cloudlet that lacks a VM's base fetches it from a peer that holds
 * it, over the data plane (mutual TLS, the site CA), part by part — the manifest first, whose id
 * must be the digest of its own content, then each file it names. Each part is verified against
 * the manifest as it completes (SHA-256, or the canonical image digest of a memory or disk
 * image) before it counts; a part cut off is resumed from what arrived (a progress file beside
 * it), so a broken link or a restarted worker costs what was in flight, not the image. Only runs
 * of non-zero 4 KiB blocks travel, zstd-compressed: an 8 GiB sparse disk sends what it holds.
 * The finished folder enters the cache as it is (ImageCache.adoptFetched): its parts were verified.
 */
const CHUNK_BYTES = 1 << 20;
const ZERO_BLOCK = Buffer.alloc(BLOCK_SIZE);
/** The progress file is rewritten at most this often (bytes): a resume repeats at most this much. */
const PROGRESS_EVERY_BYTES = 8 << 20;

const FILE_PARTS = ['kernel', 'initrd', 'deviceState', 'diskBlockHashes', 'memory', 'disk'] as const satisfies readonly Exclude<BasePart, 'manifest'>[];

/** Serves one part of a base image this cloudlet holds, from `offset`, through `send` (which waits out backpressure). */
export async function serveBasePart(cache: ImageCache, request: { baseImageId: string; part: BasePart; offset: number }, send: (f: Frame) => Promise<void>): Promise<void> {
  if (!(await cache.has(request.baseImageId))) throw new HandoffError('BASE_IMAGE_MISSING', `this cloudlet does not hold base image ${request.baseImageId}`);
  const image = await cache.get(request.baseImageId);
  const path = request.part === 'manifest' ? join(image.dir, MANIFEST_FILE) : image.path(request.part);
  const size = (await stat(path)).size;
  const file = await open(path, 'r');
  const from = request.offset - (request.offset % BLOCK_SIZE);
  try {
    const buf = Buffer.alloc(CHUNK_BYTES);
    // The disk's non-zero blocks are listed (disk.hashes): read those, not 8 GiB of holes.
    const spans = request.part === 'disk' ? listedSpans(await image.diskBlockHashes(), from) : wholeFile(from, size);
    for (const [at, length] of spans) {
      const { bytesRead } = await file.read(buf, 0, length, at);
      for (const [start, end] of nonZeroRuns(buf.subarray(0, bytesRead))) {
        const raw = buf.subarray(start, end);
        await send({ type: FrameType.BaseChunk, chunk: { offset: at + start, rawBytes: raw.length, data: await compressBatch('zstd', 3, raw) } });
      }
    }
    await send({ type: FrameType.BaseEnd, end: { sizeBytes: size } });
  } finally {
    await file.close();
  }
}

function* wholeFile(from: number, size: number): Generator<[number, number]> {
  for (let at = from; at < size; at += CHUNK_BYTES) yield [at, Math.min(CHUNK_BYTES, size - at)];
}

/** Runs of consecutive listed blocks at or after `from`, at most a chunk each: [offset, length]. */
function* listedSpans(blocks: Map<number, Buffer>, from: number): Generator<[number, number]> {
  const indices = [...blocks.keys()].filter((i) => i * BLOCK_SIZE >= from).sort((a, b) => a - b);
  let start = -1;
  let count = 0;
  for (const i of indices) {
    if (start >= 0 && i === start + count && count < CHUNK_BYTES / BLOCK_SIZE) {
      count++;
      continue;
    }
    if (start >= 0) yield [start * BLOCK_SIZE, count * BLOCK_SIZE];
    start = i;
    count = 1;
  }
  if (start >= 0) yield [start * BLOCK_SIZE, count * BLOCK_SIZE];
}

/** [from, to) runs of `buf` made of non-zero 4 KiB blocks (a short last block counts as one). */
function nonZeroRuns(buf: Buffer): Array<[number, number]> {
  const runs: Array<[number, number]> = [];
  let start = -1;
  for (let off = 0; off < buf.length; off += BLOCK_SIZE) {
    const block = buf.subarray(off, Math.min(off + BLOCK_SIZE, buf.length));
    const zero = block.length === BLOCK_SIZE ? block.equals(ZERO_BLOCK) : block.every((b) => b === 0);
    if (!zero && start < 0) start = off;
    if (zero && start >= 0) {
      runs.push([start, off]);
      start = -1;
    }
  }
  if (start >= 0) runs.push([start, buf.length]);
  return runs;
}

export interface BaseFetchReport {
  baseImageId: string;
  from: string;
  ms: number;
  /** Bytes that crossed the link this time (frames, before TLS). */
  wireBytes: number;
  /** Bytes of the parts as files (holes not counted). */
  rawBytes: number;
  /** Parts a previous, interrupted fetch had already verified, or the bytes of a part it had. */
  resumed: string[];
  /** Nothing to do: the cache held it already. */
  alreadyHeld: boolean;
  /** Another handoff's fetch of the same image was under way: this one waited for it. */
  joined?: boolean;
}

/**
 * Fetches base image `baseImageId` from the cloudlet at `peer` into `cache`, resuming what an
 * earlier attempt left in the cache's `.fetch-<id>` folder. `onProgress` is told the bytes so far.
 * One fetch of an image per cache at a time: the caller serializes them (Cloudlet.fetchBaseImage),
 * since two would write the same files.
 */
export async function fetchBaseImage(o: {
  cache: ImageCache;
  baseImageId: string;
  peer: DataEndpoint;
  tls: CloudletTls;
  onProgress?: (wireBytes: number) => void;
  signal?: AbortSignal;
}): Promise<BaseFetchReport> {
  const startedAt = Date.now();
  const report: BaseFetchReport = { baseImageId: o.baseImageId, from: o.peer.cloudlet, ms: 0, wireBytes: 0, rawBytes: 0, resumed: [], alreadyHeld: false };
  if (await o.cache.has(o.baseImageId)) return { ...report, alreadyHeld: true };
  const dir = join(o.cache.dir, `.fetch-${o.baseImageId}`);
  await mkdir(dir, { recursive: true });
  const fetchPart = async (part: BasePart, into: string) => {
    const got = await fetchPartInto({ ...o, part, path: into }, (n) => {
      report.wireBytes += n;
      o.onProgress?.(report.wireBytes);
    });
    report.rawBytes += got.rawBytes;
    if (got.resumedFrom > 0) report.resumed.push(`${part} from byte ${got.resumedFrom}`);
  };

  const manifestPath = join(dir, MANIFEST_FILE);
  if (!(await exists(manifestPath))) {
    await fetchPart('manifest', `${manifestPath}.partial`);
    const manifest = checkManifest(await readFile(`${manifestPath}.partial`, 'utf8'), o.baseImageId);
    await writeFile(`${manifestPath}.partial`, JSON.stringify(manifest, null, 2));
    await rename(`${manifestPath}.partial`, manifestPath);
  } else report.resumed.push('manifest');
  const manifest = checkManifest(await readFile(manifestPath, 'utf8'), o.baseImageId);

  for (const part of FILE_PARTS) {
    o.signal?.throwIfAborted();
    const done = join(dir, FILE_NAMES[part]);
    if (await exists(done)) {
      report.resumed.push(part);
      continue;
    }
    const partial = `${done}.partial`;
    await fetchPart(part, partial);
    await verifyPart(manifest, part, partial).catch(async (err) => {
      // What arrived is not what the manifest names: none of it is kept, the next try starts over.
      await rm(partial, { force: true });
      await rm(`${partial}.progress`, { force: true });
      throw err;
    });
    await rename(partial, done);
    await rm(`${partial}.progress`, { force: true });
  }
  // Every part was checked against the manifest as it completed: the folder enters the cache as it is.
  await o.cache.adoptFetched(dir, manifest);
  return { ...report, ms: Date.now() - startedAt };
}

function checkManifest(text: string, expectedId: string): BaseImageManifest {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new HandoffError('BASE_IMAGE_CORRUPT', `the manifest of ${expectedId} a peer sent is not JSON`);
  }
  const m = baseImageManifestSchema.safeParse(parsed);
  if (!m.success) throw new HandoffError('BASE_IMAGE_CORRUPT', `the manifest of ${expectedId} a peer sent: ${m.error.issues[0]?.message}`);
  // Content-addressed: the id is a digest of what the manifest names, and must be the one asked for.
  if (m.data.id !== expectedId || baseImageIdOf(m.data) !== expectedId) throw new HandoffError('BASE_IMAGE_CORRUPT', `a peer sent a manifest whose content is not base image ${expectedId}`);
  return m.data;
}

async function verifyPart(m: BaseImageManifest, part: (typeof FILE_PARTS)[number], path: string): Promise<void> {
  const ok =
    part === 'memory' || part === 'disk'
      ? (await stat(path)).size === m[part].sizeBytes && (await digestOfFile(path, m[part].sizeBytes)) === m[part].digest
      : (await sha256OfFile(path)) === m[part].sha256;
  // Retryable (PROTOCOL): the part is dropped and fetched again on the next try.
  if (!ok) throw new HandoffError('PROTOCOL', `part ${part} of base image ${m.id} from a peer does not match its manifest`);
}

/** One part over one connection, into `path` from where its progress file says; resumable. */
async function fetchPartInto(
  o: { baseImageId: string; part: BasePart; path: string; peer: DataEndpoint; tls: CloudletTls; signal?: AbortSignal },
  onWire: (bytes: number) => void,
): Promise<{ rawBytes: number; resumedFrom: number }> {
  const progressFile = `${o.path}.progress`;
  const resumedFrom = (await exists(o.path)) ? Number(JSON.parse(await readFile(progressFile, 'utf8').catch(() => '{"offset":0}')).offset) || 0 : 0;
  const file = await open(o.path, resumedFrom > 0 ? 'r+' : 'w');
  const socket = connect({ host: o.peer.host, port: o.peer.port, cert: o.tls.cert, key: o.tls.key, ca: o.tls.ca, minVersion: 'TLSv1.3', checkServerIdentity: expectCloudlet(o.peer.cloudlet) });
  const decoder = new FrameDecoder();
  decoder.on('error', () => undefined);
  let failure: Error | undefined;
  const fail = (err: Error) => {
    failure ??= err;
    socket.destroy();
    decoder.destroy(failure);
  };
  socket.on('error', (e) => fail(new HandoffError('PROTOCOL', `base fetch from ${o.peer.cloudlet} at ${o.peer.host}:${o.peer.port} failed: ${e.message}`)));
  socket.setTimeout(DATA_IDLE_TIMEOUT_MS, () => fail(new HandoffError('PROTOCOL', `${o.peer.cloudlet} was silent for ${DATA_IDLE_TIMEOUT_MS / 1000} s while sending base image ${o.baseImageId}`)));
  const onAbort = () => fail(new HandoffError('PROTOCOL', 'base fetch cancelled'));
  o.signal?.addEventListener('abort', onAbort, { once: true });
  let rawBytes = 0;
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('secureConnect', resolve);
      socket.once('close', () => reject(failure ?? new Error(`cannot reach ${o.peer.cloudlet}'s data plane at ${o.peer.host}:${o.peer.port}`)));
    });
    socket.write(encodeFrame({ type: FrameType.BaseRequest, request: { protocol: WIRE_PROTOCOL, version: WIRE_VERSION, baseImageId: o.baseImageId, part: o.part, offset: resumedFrom } }));
    let covered = resumedFrom;
    let savedAt = resumedFrom;
    // The peer starts at the block holding `resumedFrom` and sends runs in ascending order.
    let lastEnd = resumedFrom - (resumedFrom % BLOCK_SIZE);
    let wireSeen = 0;
    for await (const f of socket.pipe(decoder) as AsyncIterable<Frame>) {
      const wire = decoder.bytesIn - wireSeen;
      wireSeen = decoder.bytesIn;
      onWire(wire);
      if (f.type === FrameType.Error) throw new HandoffError(knownCode(f.error.code) ?? 'PROTOCOL', `${o.peer.cloudlet} refused part ${o.part} of base image ${o.baseImageId}: ${f.error.message}`);
      if (f.type === FrameType.BaseChunk) {
        const { offset, rawBytes: n, data } = f.chunk;
        if (n === 0 || n > CHUNK_BYTES || offset < lastEnd) throw new HandoffError('PROTOCOL', `base chunk at ${offset} (${n} bytes) is out of order or too large`);
        lastEnd = offset + n;
        let raw: Buffer;
        try {
          raw = zstdBounded(data, n);
        } catch (err) {
          throw new HandoffError('BASE_IMAGE_CORRUPT', `base chunk at ${offset} does not decompress: ${(err as Error).message}`);
        }
        if (raw.length !== n) throw new HandoffError('BASE_IMAGE_CORRUPT', `base chunk at ${offset} is ${raw.length} bytes, its frame says ${n}`);
        await file.write(raw, 0, n, offset);
        rawBytes += n;
        covered = Math.max(covered, offset + n);
        if (covered - savedAt >= PROGRESS_EVERY_BYTES) {
          // Written before it is claimed. Not synced: a worker's crash keeps the page cache, and
          // what a power loss takes is caught by the part's verification, which then refetches it.
          await writeFile(progressFile, JSON.stringify({ offset: covered }));
          savedAt = covered;
        }
        continue;
      }
      if (f.type === FrameType.BaseEnd) {
        await file.truncate(f.end.sizeBytes);
        socket.end();
        return { rawBytes, resumedFrom };
      }
      throw new HandoffError('PROTOCOL', `unexpected frame type ${f.type} in a base image transfer`);
    }
    throw failure ?? new HandoffError('PROTOCOL', `${o.peer.cloudlet} closed the base transfer of part ${o.part} before its end`);
  } finally {
    o.signal?.removeEventListener('abort', onAbort);
    socket.destroy();
    await file.close();
  }
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(() => true, () => false);
}
