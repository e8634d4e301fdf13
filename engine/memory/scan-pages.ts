import type { FileHandle } from 'node:fs/promises';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { BLOCK_SIZE } from '../blocks.js';

/** Pages read per call: 4 MiB. */
export const SCAN_PAGES = 1024;

/**
 * Calls `visit` for pages [from, to) of a file, in order, read 4 MiB at a time (past the end of
 * the file a page reads as zeros). `buf`, at least 4 MiB, may be reused across calls.
 */
export async function scanPages(
  file: FileHandle,
  from: number,
  to: number,
  visit: (index: number, page: Buffer) => void,
  buf: Buffer = Buffer.alloc(SCAN_PAGES * BLOCK_SIZE),
): Promise<void> {
  for (let first = from; first < to; first += SCAN_PAGES) {
    const n = Math.min(SCAN_PAGES, to - first);
    const { bytesRead } = await file.read(buf, 0, n * BLOCK_SIZE, first * BLOCK_SIZE);
    if (bytesRead < n * BLOCK_SIZE) buf.fill(0, bytesRead, n * BLOCK_SIZE);
    for (let k = 0; k < n; k++) visit(first + k, buf.subarray(k * BLOCK_SIZE, (k + 1) * BLOCK_SIZE));
    await yieldToLoop();
  }
}
