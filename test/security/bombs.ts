import lzma from 'lzma-native';
import { compress } from 'zstd-napi';
import { ALL_MODES, modeId } from '../../engine/adaptation/mode.js';
import { loadChecksum } from '../../engine/pipeline/checksum.js';
import { FrameType, encodeFrame } from '../../engine/wire/frames.js';

const MiB = 1 << 20;
/** What a bomb's batch header declares its content to be: one chunk's worth. */
const DECLARED_BYTES = 4096;

/**
 * A batch frame whose header is well formed and whose payload checksums match, declaring 4 KiB
 * of content, whose payload inflates to gigabytes: zstd, 64 frames of 64 MiB of zeros (4 GiB);
 * xz, 16 streams of 64 MiB of zeros (1 GiB). Both decoders read concatenated frames and streams
 * as one input, so an unbounded decoder would produce all of it.
 */
export async function bombBatch(codec: 'zstd' | 'xz'): Promise<{ frame: Buffer; wireBytes: number; inflatesTo: number; declared: number }> {
  const zeros = Buffer.alloc(64 * MiB);
  const [unit, copies] =
    codec === 'zstd'
      ? [compress(zeros, { compressionLevel: 19 }), 64]
      : [await new Promise<Buffer>((resolve, reject) => lzma.compress(zeros, 1, ((r: Buffer, e?: Error) => (e ? reject(e) : resolve(r))) as (r: Buffer) => void)), 16];
  const payload = Buffer.concat(Array.from({ length: copies }, () => unit));
  const mode = ALL_MODES.find((m) => m.delta === 'none' && m.codec === codec)!;
  const checksum = await loadChecksum();
  const frame = encodeFrame({
    type: FrameType.Batch,
    header: {
      seq: 0,
      mode: modeId(mode),
      chunks: 1,
      rawBytes: DECLARED_BYTES,
      rawXxh64: checksum(Buffer.alloc(DECLARED_BYTES)),
      payloadBytes: payload.length,
      payloadXxh64: checksum(payload),
    },
    payload,
  });
  return { frame, wireBytes: frame.length, inflatesTo: copies * zeros.length, declared: DECLARED_BYTES };
}
