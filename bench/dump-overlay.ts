import { open, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { CodecPool } from '../engine/pipeline/codec-pool.js';
import { Space } from '../engine/pipeline/chunk-records.js';
import { baseChunkReader, vmChunkReader } from '../engine/pipeline/chunk-source.js';
import { encodeOverlay, type ChunkList } from '../engine/pipeline/overlay-encoder.js';
import { ensureBaseImage } from '../infra/base-image/build-base-image.js';
import { tempRoot } from '../test/support/fixtures.js';
import { captureRealOverlay } from './capture-overlay.js';
/**
 * tsx bench/dump-overlay.ts <folder>
 * Captures the overlay bench:adaptation hands off (kvstore, 256 MiB of records, 1 GiB guest, 20 s
 * of updates) and writes, per 1 MiB batch as the stream forms them, its data chunks (data/NNNNN.bin)
 * and the base chunks at the same offsets (base/NNNNN.bin): material for trying compressors
 * offline (`zstd -b`, `--patch-from`, `--long`, dictionaries) before building a mode on one.
 */
const out = process.argv[2];
if (!out) throw new Error('usage: tsx bench/dump-overlay.ts <folder>');
const log = (l: string) => console.error(l);
const root = await tempRoot('bench');
const pool = new CodecPool();
try {
  const base = await ensureBaseImage({ memoryMiB: 1024, accel: 'tcg', log });
  const cap = await captureRealOverlay(base, root.dir, { name: 'kvstore', args: ['256', '200', '50'] }, 20, log);
  const { vm } = cap;
  const [ram, bm, bd] = await Promise.all([open(vm.files.ramFile, 'r'), open(vm.base.path('memory'), 'r'), open(vm.base.path('disk'), 'r')]);
  const source = vmChunkReader(ram, vm.base.manifest.memory.sizeBytes, vm.disk);
  const baseReader = baseChunkReader(bm, vm.base.manifest.memory.sizeBytes, bd, vm.base.manifest.disk.sizeBytes);
  const dedup = await cap.cloudlet.dedupIndex(vm.base);
  const overlay: ChunkList[] = [{ space: Space.Memory, indices: cap.memoryPages }, { space: Space.Disk, indices: cap.diskBlocks }];
  await mkdir(join(out, 'data'), { recursive: true }); await mkdir(join(out, 'base'), { recursive: true });
  let k = 0; let chunks = 0; const counts = { zero: 0, baseRefs: 0, selfRefs: 0, data: 0 };
  const pending: Promise<void>[] = [];
  for await (const b of encodeOverlay(overlay, { pool, dedup: dedup.forOverlay(), source, base: baseReader, currentMode: () => 'none/none', onClassified: (recs) => {
    const d = recs.filter((r) => r.kind === 'data') as Array<{ data: Uint8Array; base: Uint8Array }>;
    const name = String(k++).padStart(5, '0') + '.bin';
    pending.push(writeFile(join(out, 'data', name), Buffer.concat(d.map((r) => Buffer.from(r.data)))));
    pending.push(writeFile(join(out, 'base', name), Buffer.concat(d.map((r) => Buffer.from(r.base)))));
  } })) { chunks += b.stages.chunks; counts.zero += b.stages.zero; counts.baseRefs += b.stages.baseRefs; counts.selfRefs += b.stages.selfRefs; counts.data += b.stages.data; }
  await Promise.all(pending);
  log(`batches ${k}, chunks ${chunks}, ${JSON.stringify(counts)}, memory pages ${cap.memoryPages.length}, disk blocks ${cap.diskBlocks.length}`);
  log(`base memory: ${base.dir}/memory.img`);
  await Promise.allSettled([ram.close(), bm.close(), bd.close()]);
  await cap.cloudlet.destroyAll(); await cap.cloudlet.stop();
} finally { await pool.close(); await root.remove(); }
