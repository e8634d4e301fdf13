import type { Draw } from './draw.js';

/**
 * How an input reaches the receiver: the lengths of the reads it arrives in. The decoder's
 * buffering differs by where the reads cut a frame (inside its length field, just past it, at a
 * frame's end), so the cuts are drawn, not only the bytes.
 */
export type Chunking = number[];

const PIECE_SIZES = [1, 3, 7, 64, 512, 4096, 16384, 65536] as const;

/**
 * Piece lengths summing to `length`, at most `maxPieces` of them. `frameStarts` (offsets where
 * a frame begins) lets a plan cut a few bytes into each frame, inside its length field.
 */
export function drawChunking(draw: Draw, length: number, maxPieces: number, frameStarts: number[] = []): Chunking {
  if (length === 0) return [];
  const plan = draw.weighted([
    [1, 'whole'],
    [4, 'uniform'],
    [2, 'mixed'],
    [frameStarts.length ? 3 : 0, 'into-frames'],
  ] as const);
  if (plan === 'whole') return [length];
  const smallest = Math.ceil(length / maxPieces);
  const largest = Math.max(smallest, draw.pick(PIECE_SIZES));
  const bulk = draw.bulk();
  const piece = () => bulk.int(smallest, largest);
  const cuts = new Set<number>();
  if (plan === 'into-frames') {
    for (const start of frameStarts) if (bulk.chance(0.7)) cuts.add(start + bulk.int(0, 4));
  }
  const pieces: number[] = [];
  let at = 0;
  const sorted = [...cuts].filter((c) => c > 0 && c < length).sort((a, b) => a - b);
  for (const cut of [...sorted, length]) {
    while (at < cut && pieces.length < maxPieces - sorted.length - 1) {
      // A mixed plan drops in reads of one to three bytes: a length field split over reads.
      const next = plan === 'mixed' && bulk.chance(0.2) ? bulk.int(1, 3) : piece();
      const size = Math.min(next, cut - at);
      pieces.push(size);
      at += size;
    }
    if (at < cut) {
      pieces.push(cut - at);
      at = cut;
    }
  }
  return pieces;
}

/** `bytes` cut as `chunking` says. */
export function cut(bytes: Buffer, chunking: Chunking): Buffer[] {
  const out: Buffer[] = [];
  let at = 0;
  for (const n of chunking) {
    out.push(bytes.subarray(at, at + n));
    at += n;
  }
  return out;
}
