/**
 * A valid zstd frame of `contentBytes` repeated bytes, written by hand (RFC 8878) rather than
 * compressed: one RLE block per 128 KiB, four bytes each, so a gigabyte costs 32 KiB on the wire
 * and nothing to build. With `declareSize` the frame header states the content size, which is
 * what a one-shot decoder sizes its output buffer by.
 */
export function zstdBomb(contentBytes: number, declareSize: boolean, fill = 0): Buffer {
  const BLOCK = 128 << 10;
  const blocks = Math.max(1, Math.ceil(contentBytes / BLOCK));
  const head = Buffer.alloc(declareSize ? 14 : 6);
  head.writeUInt32LE(0xfd2fb528, 0);
  // Frame header descriptor: an 8-byte content size field (or none), not single-segment, no checksum, no dictionary id.
  head.writeUInt8(declareSize ? 0xc0 : 0x00, 4);
  // Window descriptor: 2^(10 + 7) = 128 KiB, one block.
  head.writeUInt8(7 << 3, 5);
  if (declareSize) head.writeBigUInt64LE(BigInt(contentBytes), 6);
  const body = Buffer.alloc(blocks * 4);
  for (let b = 0, left = contentBytes; b < blocks; b++, left -= BLOCK) {
    const size = Math.min(BLOCK, Math.max(0, left));
    const last = b === blocks - 1 ? 1 : 0;
    // Block header: last-block bit, type 1 (RLE), size in the upper 21 bits; then the byte to repeat.
    body.writeUIntLE(last | (1 << 1) | (size << 3), b * 4, 3);
    body.writeUInt8(fill, b * 4 + 3);
  }
  return Buffer.concat([head, body]);
}
