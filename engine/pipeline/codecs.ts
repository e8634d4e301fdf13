import { gunzipSync, gzipSync } from 'node:zlib';
import lzma from 'lzma-native';
import { compress as zstdCompress, decompress as zstdDecompress } from 'zstd-napi';
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
      return zstdCompress(raw, { compressionLevel: level });
    case 'xz':
      return xz('compress', Buffer.from(raw), level as lzma.Preset);
  }
}

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
      out = zstdDecompress(data);
      break;
    case 'xz':
      out = await xz('decompress', Buffer.from(data));
      break;
  }
  if (out.length !== expectedBytes) throw new Error(`${codec} batch decompressed to ${out.length} bytes, header says ${expectedBytes}`);
  return out;
}

/** lzma-native's one-shot calls report (result, error) to a callback. */
function xz(op: 'compress' | 'decompress', input: Buffer, preset?: lzma.Preset): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const done = ((result: Buffer, err?: Error) => (err ? reject(err) : resolve(result))) as (result: Buffer) => void;
    if (op === 'compress') lzma.compress(input, preset, done);
    else lzma.decompress(input, undefined, done);
  });
}
