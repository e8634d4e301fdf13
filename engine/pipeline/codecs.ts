import { gunzipSync, gzipSync } from 'node:zlib';
import lzma from 'lzma-native';
import { compress as zstdCompress } from 'zstd-napi';
import zstdBinding from 'zstd-napi/binding.js';
import type { CodecName } from '../adaptation/mode.js';

/**
 * Batch compression. gzip from Node's zlib; xz through lzma-native (liblzma); zstd through
 * zstd-napi (libzstd compiled from the package's bundled sources). Synchronous where the binding
 * is, since these run on pool threads, never on the main thread.
 */
export async function compressBatch(codec: CodecName, level: number, raw: Uint8Array): Promise<Buffer> {
  switch (codec) {
    case 'none':
      return Buffer.from(raw);
    case 'gzip':
      return gzipSync(raw, { level });
    case 'zstd':
      return zstdCompress(raw, { compressionLevel: level, ...ZSTD_SEARCH[level] });
    case 'xz':
      return xzCompress(Buffer.from(raw), level as lzma.Preset);
  }
}

type ZstdSearch = { searchLog: number; minMatch: number; targetLength: number; strategy: keyof typeof zstdBinding.Strategy };

/**
 * The search libzstd runs at our levels on inputs over 256 KB: the rows of its default table
 * (lib/compress/clevels.h, 1.5), set explicitly so an input of any size is compressed as a full
 * 1 MiB batch is. Left to itself, zstd picks another strategy for inputs of 256 KB or less (15:
 * btopt for btlazy2; 16: btultra for btopt): on 64-chunk inputs, as samples were then, zstd-16
 * ran at a quarter of its batches' speed (issue 14's note). The stream's final batches of an
 * epoch are often that small. Window, hash and chain sizes still follow
 * the input's size. A test checks a 1 MiB batch comes out byte for byte as zstd's own choice.
 */
export const ZSTD_SEARCH: Readonly<Record<number, ZstdSearch>> = {
  1: { searchLog: 1, minMatch: 7, targetLength: 0, strategy: 'fast' },
  3: { searchLog: 1, minMatch: 5, targetLength: 0, strategy: 'dfast' },
  9: { searchLog: 4, minMatch: 5, targetLength: 16, strategy: 'lazy2' },
  15: { searchLog: 6, minMatch: 5, targetLength: 32, strategy: 'btlazy2' },
  16: { searchLog: 5, minMatch: 5, targetLength: 48, strategy: 'btopt' },
  19: { searchLog: 7, minMatch: 3, targetLength: 256, strategy: 'btultra2' },
};

/**
 * The largest window a batch's zstd frame may ask the decoder for: a batch is at most 16 MiB, so
 * no honest frame needs more (2^24), and a hostile one cannot make the decoder reserve 2 GiB.
 */
const ZSTD_WINDOW_LOG_MAX = 24;
/** liblzma's memory limit for one batch's decoder: xz -9 needs 65 MiB. */
const XZ_MEMLIMIT_BYTES = 80 << 20;
const XZ_SLICE_BYTES = 2048;

/**
 * Decompresses a received batch into at most `expectedBytes` (the size its header declares,
 * itself bounded by the frame schema): a bomb — a few bytes that inflate to gigabytes — is
 * refused when it passes that size, never inflated.
 */
export async function decompressBatch(codec: CodecName, data: Uint8Array, expectedBytes: number): Promise<Buffer> {
  let out: Buffer;
  switch (codec) {
    case 'none':
      out = Buffer.from(data);
      break;
    case 'gzip':
      out = gunzipSync(data, { maxOutputLength: expectedBytes });
      break;
    case 'zstd':
      out = zstdBounded(data, expectedBytes);
      break;
    case 'xz':
      out = await xzBounded(Buffer.from(data), expectedBytes);
      break;
  }
  if (out.length !== expectedBytes) throw new Error(`${codec} batch decompressed to ${out.length} bytes, header says ${expectedBytes}`);
  return out;
}

/** lzma-native's one-shot compress reports (result, error) to a callback. */
function xzCompress(input: Buffer, preset: lzma.Preset): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    lzma.compress(input, preset, ((result: Buffer, err?: Error) => (err ? reject(err) : resolve(result))) as (result: Buffer) => void);
  });
}

const overflow = (codec: string, limit: number) => new Error(`${codec} batch inflates past the ${limit} bytes its header declares`);

/**
 * zstd into a buffer of `limit` + 1 bytes: one byte more than declared is proof enough of a lie.
 * `dictionary`: the raw-content dictionary the data was compressed against (a device state's base).
 */
export function zstdBounded(data: Uint8Array, limit: number, dictionary?: Uint8Array): Buffer {
  const dctx = new zstdBinding.DCtx();
  dctx.setParameter(zstdBinding.DParameter.windowLogMax, ZSTD_WINDOW_LOG_MAX);
  if (dictionary) dctx.loadDictionary(dictionary);
  const out = Buffer.allocUnsafe(limit + 1);
  let written = 0;
  let input = data;
  for (;;) {
    const [remaining, produced, consumed] = dctx.decompressStream(out.subarray(written), input);
    written += produced;
    input = input.subarray(consumed);
    if (written > limit) throw overflow('zstd', limit);
    if (remaining === 0 && input.length === 0) return out.subarray(0, written);
    if (produced === 0 && consumed === 0) throw new Error(input.length === 0 ? 'zstd batch ends inside a frame' : 'zstd batch does not decode any further');
  }
}

/**
 * xz through liblzma's stream, fed XZ_SLICE_BYTES at a time and stopped at the slice whose
 * output passes `limit`: liblzma codes a whole written chunk before it is asked again, so the
 * slice bounds what one step can inflate (zeros inflate about 7000-fold: 14 MiB a slice).
 * A corrupt stream ends ('error', sometimes 'end') without calling back the write that carried
 * it: each write is raced with that end (found by the fuzzer).
 */
async function xzBounded(data: Buffer, limit: number): Promise<Buffer> {
  const decoder = lzma.createDecompressor({ memlimit: XZ_MEMLIMIT_BYTES });
  const parts: Buffer[] = [];
  let written = 0;
  let failure: Error | undefined;
  decoder.on('data', (chunk: Buffer) => {
    written += chunk.length;
    if (written > limit) failure ??= overflow('xz', limit);
    else parts.push(chunk);
  });
  let ended = false;
  const end = new Promise<void>((resolve) => {
    decoder.once('end', () => ((ended = true), resolve()));
    decoder.once('error', (err: Error) => ((ended = true), (failure ??= err), resolve()));
  });
  try {
    for (let off = 0; off < data.length && !failure && !ended; off += XZ_SLICE_BYTES) {
      await Promise.race([new Promise<void>((resolve) => decoder.write(data.subarray(off, off + XZ_SLICE_BYTES), () => resolve())), end]);
    }
    if (!failure && !ended) {
      decoder.end();
      await end;
    }
    if (failure) throw failure;
    return Buffer.concat(parts);
  } finally {
    if (!ended || failure) decoder.destroy();
  }
}
