import { execFile, spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { finished } from 'node:stream/promises';
import { once } from 'node:events';
import { open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { z } from 'zod';
import { BLOCK_SIZE } from '../../engine/blocks.js';
import { FILE_NAMES } from '../../engine/image/base-image.js';
import { blockHash, decodeBlockHashes } from '../../engine/image/image-digest.js';
import type { BuiltBaseImage } from '../../infra/base-image/build-base-image.js';
import { CpuSampler } from './cpu-sampler.js';

const run = promisify(execFile);
const READ_BYTES = 4 << 20;

/** `qemu-img map --output=json` rows: depth 0 with data = written in the top layer. */
const qcow2MapSchema = z.array(
  z.object({ start: z.number(), length: z.number(), depth: z.number(), data: z.boolean(), offset: z.number().optional() }),
);

export interface OverlayExtract {
  /** Memory pages and disk blocks that differ from the base at stop time. */
  changedChunks: number;
  /** Of those, exact copies of some base chunk (a target holding the base needs none of their bytes). */
  baseDuplicates: number;
  overlayBytes: number;
  file: string;
}

/**
 * The final overlay of a stopped source, written to `file`: memory pages and disk blocks that
 * differ from the base at stop time, exact copies of base chunks removed. Reads its RAM file and
 * its qcow2 top layer over the base disk; takes seconds, so the source can be let go soon after.
 */
export async function extractOverlay(base: BuiltBaseImage, stopped: { ramFile: string; disk: string }, file: string): Promise<OverlayExtract> {
  const baseChunks = await baseChunkSet(base);
  const out = createWriteStream(file);
  let changedChunks = 0;
  let baseDuplicates = 0;
  let overlayBytes = 0;
  const offer = async (chunk: Buffer) => {
    changedChunks++;
    if (baseChunks.has(blockHash(chunk).toString('base64'))) {
      baseDuplicates++;
      return;
    }
    overlayBytes += chunk.length;
    if (!out.write(Buffer.from(chunk))) await once(out, 'drain');
  };

  // Memory: page by page against the base snapshot at the same offset.
  const [ram, baseRam] = await Promise.all([open(stopped.ramFile, 'r'), open(join(base.dir, FILE_NAMES.memory), 'r')]);
  try {
    const a = Buffer.alloc(READ_BYTES);
    const b = Buffer.alloc(READ_BYTES);
    for (let pos = 0; pos < base.manifest.memory.sizeBytes; pos += READ_BYTES) {
      const [ra, rb] = await Promise.all([ram.read(a, 0, READ_BYTES, pos), baseRam.read(b, 0, READ_BYTES, pos)]);
      for (let off = 0; off < ra.bytesRead; off += BLOCK_SIZE) {
        const page = a.subarray(off, off + BLOCK_SIZE);
        if (off < rb.bytesRead && page.equals(b.subarray(off, off + BLOCK_SIZE))) continue;
        await offer(page);
      }
    }
  } finally {
    await ram.close();
    await baseRam.close();
  }

  // Disk: the blocks written into the qcow2 top layer, read at their host offsets.
  const { stdout } = await run('qemu-img', ['map', '--output=json', stopped.disk], { maxBuffer: 256 << 20 });
  const top = qcow2MapSchema.parse(JSON.parse(stdout)).filter((e) => e.depth === 0 && e.data && e.offset !== undefined);
  const [qcow2, baseDisk] = await Promise.all([open(stopped.disk, 'r'), open(join(base.dir, FILE_NAMES.disk), 'r')]);
  try {
    const block = Buffer.alloc(BLOCK_SIZE);
    const baseBlock = Buffer.alloc(BLOCK_SIZE);
    for (const e of top) {
      for (let off = 0; off < e.length; off += BLOCK_SIZE) {
        await qcow2.read(block, 0, BLOCK_SIZE, e.offset! + off);
        await baseDisk.read(baseBlock, 0, BLOCK_SIZE, e.start + off);
        if (!block.equals(baseBlock)) await offer(block);
      }
    }
  } finally {
    await qcow2.close();
    await baseDisk.close();
  }
  out.end();
  await finished(out);
  return { changedChunks, baseDuplicates, overlayBytes, file };
}

/**
 * Bytes of `xz -9e` of a file, and xz's CPU seconds. xz runs at the lowest priority: at -9e it
 * takes minutes, so the benchmark lets it use only the CPU its measured runs leave idle.
 */
export async function xzSize(file: string, signal: AbortSignal): Promise<{ xzBytes: number; xzCpuSeconds: number }> {
  const xz = spawn('nice', ['-n', '19', 'xz', '-9e', '-T2', '--block-size=64MiB', '-c', file], { stdio: ['ignore', 'pipe', 'inherit'], signal, killSignal: 'SIGKILL' });
  xz.on('error', () => undefined);
  let xzBytes = 0;
  xz.stdout.on('data', (b: Buffer) => (xzBytes += b.length));
  const exited = once(xz, 'exit');
  // nice execs xz in place; sampled every 250 ms while it runs (an exited child's time is gone).
  const cpu = new CpuSampler([xz.pid!]);
  await cpu.start();
  const [code] = await exited;
  const xzCpuSeconds = await cpu.stop();
  if (code !== 0) throw new Error(`xz exited with ${code}`);
  return { xzBytes, xzCpuSeconds };
}

export type FloorMeasurement = Omit<OverlayExtract, 'file'> & { xzBytes: number; xzCpuSeconds: number };

/** SHA-256 of every base memory page and every non-zero base disk block (from the image's index). */
async function baseChunkSet(base: BuiltBaseImage): Promise<Set<string>> {
  const set = new Set<string>();
  const diskIndex = decodeBlockHashes(await readFile(join(base.dir, FILE_NAMES.diskBlockHashes)), base.manifest.disk.sizeBytes);
  for (const h of diskIndex.values()) set.add(h.toString('base64'));
  const memory = await open(join(base.dir, FILE_NAMES.memory), 'r');
  try {
    const buf = Buffer.alloc(READ_BYTES);
    for (let pos = 0; ; pos += READ_BYTES) {
      const { bytesRead } = await memory.read(buf, 0, READ_BYTES, pos);
      if (bytesRead === 0) break;
      for (let off = 0; off < bytesRead; off += BLOCK_SIZE) set.add(blockHash(buf.subarray(off, off + BLOCK_SIZE)).toString('base64'));
    }
  } finally {
    await memory.close();
  }
  return set;
}
