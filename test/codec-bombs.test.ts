import { test } from 'node:test';
import assert from 'node:assert/strict';
import lzma from 'lzma-native';
import { compress } from 'zstd-napi';
import { compressBatch, decompressBatch } from '../engine/pipeline/codecs.js';

// A batch header declares its raw size; a payload that inflates past it is refused as it passes
// it, so a few KB on the wire cannot make the target allocate gigabytes.

const MiB = 1 << 20;

/** How much the process's RSS grew while `work` ran, sampled every 5 ms. */
async function rssGrowth(work: () => Promise<unknown>): Promise<number> {
  const before = process.memoryUsage.rss();
  let peak = before;
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage.rss())), 5);
  try {
    await work();
  } finally {
    clearInterval(sampler);
  }
  return Math.max(peak, process.memoryUsage.rss()) - before;
}

test('a zstd bomb (4 GiB of zeros in 64 frames) declared as 4 KiB is refused with bounded memory', async () => {
  const frame = compress(Buffer.alloc(64 * MiB), { compressionLevel: 19 });
  const bomb = Buffer.concat(Array.from({ length: 64 }, () => frame));
  assert.ok(bomb.length < 256 * 1024, `the bomb is small on the wire (${bomb.length} bytes)`);
  const grew = await rssGrowth(() => assert.rejects(decompressBatch('zstd', bomb, 4096), /zstd batch inflates past the 4096 bytes its header declares/));
  assert.ok(grew < 32 * MiB, `memory grew ${(grew / MiB).toFixed(1)} MiB`);
});

test('an xz bomb (64 MiB of zeros) declared as 4 KiB is refused with bounded memory', async () => {
  const bomb = await new Promise<Buffer>((resolve, reject) =>
    lzma.compress(Buffer.alloc(64 * MiB), 1, ((r: Buffer, e?: Error) => (e ? reject(e) : resolve(r))) as (r: Buffer) => void),
  );
  assert.ok(bomb.length < 64 * 1024, `the bomb is small on the wire (${bomb.length} bytes)`);
  const grew = await rssGrowth(() => assert.rejects(decompressBatch('xz', bomb, 4096), /xz batch inflates past the 4096 bytes its header declares/));
  assert.ok(grew < 32 * MiB, `memory grew ${(grew / MiB).toFixed(1)} MiB`);
});

test('honest batches still decode to exactly their declared size, and a short one is named', async () => {
  const raw = Buffer.from(Array.from({ length: 3 * 4096 }, (_, i) => (i * 7) & 0xff));
  for (const [codec, level] of [['zstd', 3], ['xz', 1], ['gzip', 6], ['none', 0]] as const) {
    const packed = await compressBatch(codec, level, raw);
    assert.deepEqual(await decompressBatch(codec, packed, raw.length), raw, codec);
    await assert.rejects(decompressBatch(codec, packed, raw.length + 1), new RegExp(`${codec}|decompressed to`), `${codec}: a header that claims more than arrives`);
  }
});
