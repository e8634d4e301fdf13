import { copyFile, open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ensureBaseImage } from '../infra/base-image/build-base-image.js';
import { PREFIX } from '../infra/paths.js';
import { loadHash64 } from '../engine/pipeline/checksum.js';
import { nativePageScan } from '../engine/memory/native-page-scan.js';
import { MemoryTracker, changedShare } from '../engine/memory/memory-tracker.js';
import { CodecPool } from '../engine/pipeline/codec-pool.js';

/**
 * npm run bench:page-scan [-- --memory-mib 1024] [-- --rounds 5]
 *
 * The stop-time changed-pages scan of a guest's RAM file, native (native/page-scan: pread +
 * xxHash64 in C) against its fallback (file read in JS + xxhash-wasm), on one thread and on the
 * codec pool, over a copy of a base image's memory on /dev/shm with every page unchanged (the
 * scan's whole cost is reading and hashing). Prints medians and the ratio; the fallback is the
 * baseline, measured in the same run.
 */
const { values } = parseArgs({ options: { 'memory-mib': { type: 'string', default: '1024' }, rounds: { type: 'string', default: '5' } } });
const memoryMiB = Number(values['memory-mib']);
const rounds = Number(values.rounds);
if (!(Number.isInteger(rounds) && rounds >= 1)) throw new Error(`--rounds must be a positive integer, got ${values.rounds}`);

const native = nativePageScan();
if (!native) throw new Error('the native scanner did not load: run npm ci (it builds native/page-scan)');
const base = await ensureBaseImage({ memoryMiB, accel: 'tcg', log: (l) => console.error(l) });
const path = `/dev/shm/${PREFIX}-page-scan-bench-${process.pid}.ram`;
await copyFile(join(base.dir, base.manifest.memory.name), path);
const pool = new CodecPool();
try {
  await pool.warm();
  const file = await open(path, 'r');
  const sizeBytes = (await file.stat()).size;
  const hash = await loadHash64();
  const start = await MemoryTracker.hashBase(file, sizeBytes, hash, await pool.blockHashRecords(path, sizeBytes));
  await file.close();
  const pages = start.held.length;
  const held = new SharedArrayBuffer(pages * 8);
  new BigUint64Array(held).set(start.held);
  const median = async (run: () => Promise<number>) => {
    const times: number[] = [];
    for (let r = 0; r < rounds; r++) {
      const t = performance.now();
      const changed = await run();
      times.push(performance.now() - t);
      if (changed !== 0) throw new Error(`an unchanged file showed ${changed} changed pages`);
    }
    return times.sort((a, b) => a - b)[Math.floor(times.length / 2)]!;
  };
  // Both exactly as a pool thread runs them; the fallback with the native scanner left out.
  const oneThread = async (useNative: boolean) => (await changedShare({ path, held, from: 0, to: pages }, hash, useNative ? native : null)).length;
  const wasm1 = await median(() => oneThread(false));
  const native1 = await median(() => oneThread(true));
  const tracker = MemoryTracker.fromBase(start, hash);
  const nativePool = await median(async () => (await tracker.changedPagesOnPool(path, pool)).length);
  // A pool whose threads load the fallback (worker threads start with a copy of the environment).
  process.env.EHOFF_PAGE_SCAN = 'wasm';
  const wasmPool = new CodecPool();
  let wasmPoolMs: number;
  try {
    await wasmPool.warm();
    wasmPoolMs = await median(async () => (await tracker.changedPagesOnPool(path, wasmPool)).length);
  } finally {
    await wasmPool.close();
    delete process.env.EHOFF_PAGE_SCAN;
  }
  console.log(`changed-pages scan of ${memoryMiB} MiB (${pages} pages), median of ${rounds}:`);
  console.log(`  one thread:           wasm ${wasm1.toFixed(0)} ms, native ${native1.toFixed(0)} ms — native ${(wasm1 / native1).toFixed(2)}× faster`);
  console.log(`  codec pool (${pool.threads} threads): wasm ${wasmPoolMs.toFixed(0)} ms, native ${nativePool.toFixed(0)} ms — native ${(wasmPoolMs / nativePool).toFixed(2)}× faster`);
} finally {
  await pool.close();
  await rm(path, { force: true });
}
