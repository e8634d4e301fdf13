import { open } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { ALL_MODES, modeId, type ModeId } from '../engine/adaptation/mode.js';
import { BLOCK_SIZE } from '../engine/blocks.js';
import { CodecPool } from '../engine/pipeline/codec-pool.js';
import { Space } from '../engine/pipeline/chunk-records.js';
import { baseChunkReader, vmChunkReader, type ChunkReader } from '../engine/pipeline/chunk-source.js';
import type { DedupIndex } from '../engine/pipeline/dedup-index.js';
import { CHUNKS_PER_BATCH, encodeOverlay, type ChunkList } from '../engine/pipeline/overlay-encoder.js';
import { ensureBaseImage } from '../infra/base-image/build-base-image.js';
import { tempRoot } from '../test/support/fixtures.js';
import { adaptiveSeconds, staticSeconds, type ModeProfile } from './adaptive-replay.js';
import { captureRealOverlay } from './capture-overlay.js';

/**
 * npm run bench:pipeline [-- --quick] [-- --json]
 * On the overlay of a real guest (kvstore: text-like records under updates, plus its disk log):
 * per mode P (input MB/s on this machine's cores) and r; effective throughput at 5/10/25 Mbit/s;
 * bytes after each stage; and a replay of a link that drops from 25 to 5 Mbit/s halfway, adaptive
 * policy against every static mode.
 */
const { values } = parseArgs({ options: { quick: { type: 'boolean', default: false }, json: { type: 'boolean', default: false } } });
const quick = values.quick;
const log = (l: string) => console.error(l);
const MB = 1e6;

const memoryMiB = 512;
const workloadMiB = quick ? 64 : 256;
const sampleChunksPerHalf = (quick ? 1 : 4) * CHUNKS_PER_BATCH;

const root = await tempRoot('bench');
const pool = new CodecPool();
try {
  const base = await ensureBaseImage({ memoryMiB, accel: 'tcg', log });
  const cap = await captureRealOverlay(base, root.dir, { name: 'kvstore', args: [String(workloadMiB), '4000', '200'] }, quick ? 2 : 5, log);
  const { vm } = cap;
  const [ram, baseMemory, baseDisk] = await Promise.all([open(vm.files.ramFile, 'r'), open(vm.base.path('memory'), 'r'), open(vm.base.path('disk'), 'r')]);
  const source = vmChunkReader(ram, vm.base.manifest.memory.sizeBytes, vm.disk);
  const baseReader = baseChunkReader(baseMemory, vm.base.manifest.memory.sizeBytes, baseDisk, vm.base.manifest.disk.sizeBytes);
  const dedup = await cap.cloudlet.dedupIndex(vm.base);
  const overlay: ChunkList[] = [
    { space: Space.Memory, indices: cap.memoryPages },
    { space: Space.Disk, indices: cap.diskBlocks },
  ];
  const totalChunks = cap.memoryPages.length + cap.diskBlocks.length;
  log(`overlay: ${cap.memoryPages.length} memory pages + ${cap.diskBlocks.length} disk blocks = ${((totalChunks * BLOCK_SIZE) / MB).toFixed(1)} MB (captured in ${cap.captureMs} ms)`);

  // Stages over the whole overlay: fossil delta then gzip-1, and zero/dedup counts.
  const stages = await fullPass(overlay, 'fossil/gzip-1', dedup, source, baseReader);
  const xorZstd = await fullPass(overlay, 'xor/zstd-3', dedup, source, baseReader);
  log(`stages: in ${mb(stages.input)} → zero/dedup ${mb(stages.afterDedup)} → fossil delta ${mb(stages.raw)} → gzip-1 ${mb(stages.payload)} (xor+zstd-3: ${mb(xorZstd.payload)})`);

  // Per mode: P and r on evenly spaced samples from each half of the overlay.
  const halves = splitHalves(overlay);
  const profiles: ModeProfile[] = [];
  for (const mode of ALL_MODES.map(modeId)) {
    const a = await measure(mode, sample(halves[0], sampleChunksPerHalf), dedup, source, baseReader);
    const b = await measure(mode, sample(halves[1], sampleChunksPerHalf), dedup, source, baseReader);
    profiles.push({ mode, P_MBps: [a.P, b.P], ratio: [a.r, b.r] });
  }
  const rows = profiles.map((p) => {
    const P = harmonic(p.P_MBps);
    const r = (p.ratio[0] + p.ratio[1]) / 2;
    const eff = (mbps: number) => round(Math.min(P, mbps / 8 / r));
    return { mode: p.mode, P_MBps: round(P), ratio: round(r, 4), eff5_MBps: eff(5), eff10_MBps: eff(10), eff25_MBps: eff(25) };
  });

  const inputMB = stages.input / MB;
  const link = { inputMB, mbpsBefore: 25, mbpsAfter: 5 };
  const statics = profiles.map((p) => ({ mode: p.mode, seconds: staticSeconds(p, link) })).sort((x, y) => x.seconds - y.seconds);
  const adaptive = adaptiveSeconds(profiles, link, { decideEverySeconds: 1, sampleEverySeconds: 1.5, modesPerSample: 4, sampleMB: 0.25, rLagSeconds: 1 });
  const averageStatic = statics.reduce((s, x) => s + x.seconds, 0) / statics.length;

  console.log(`\nmode            P MB/s   ratio   eff@5Mbps eff@10Mbps eff@25Mbps (input MB/s = min(P, R/r))`);
  for (const r of rows) console.log(`${r.mode.padEnd(15)} ${String(r.P_MBps).padStart(7)} ${r.ratio.toFixed(4).padStart(7)} ${String(r.eff5_MBps).padStart(10)} ${String(r.eff10_MBps).padStart(10)} ${String(r.eff25_MBps).padStart(10)}`);
  console.log(`\nstages (whole overlay): input ${mb(stages.input)}, after zero/dedup ${mb(stages.afterDedup)} (${stages.zero} zero, ${stages.baseRefs} base refs, ${stages.selfRefs} self refs), after fossil delta ${mb(stages.raw)}, after gzip-1 ${mb(stages.payload)}; xor + zstd-3: ${mb(xorZstd.payload)}`);
  console.log(`replay, 25 → 5 Mbit/s halfway through ${inputMB.toFixed(1)} MB: adaptive ${adaptive.seconds.toFixed(1)} s (${adaptive.switches.map((s) => `${s.to}@${s.t.toFixed(1)}s`).join(', ') || 'no switch'}); best static ${statics[0]!.mode} ${statics[0]!.seconds.toFixed(1)} s (adaptive/best = ${(adaptive.seconds / statics[0]!.seconds).toFixed(2)}); average static ${averageStatic.toFixed(1)} s; worst ${statics.at(-1)!.mode} ${statics.at(-1)!.seconds.toFixed(1)} s`);
  console.log(`(P measured on ${pool.threads} pool threads of this machine; replay is a model run over these measured P and r, with the workflow's own chooseMode, sampling cost and a 1 s lag on R)`);
  if (values.json) {
    console.log(JSON.stringify({
      overlay: { memoryPages: cap.memoryPages.length, diskBlocks: cap.diskBlocks.length, workload: `kvstore ${workloadMiB} MiB`, guestMiB: memoryMiB },
      modes: rows,
      stages: { inputBytes: stages.input, afterZeroDedupBytes: stages.afterDedup, afterDeltaBytes: stages.raw, afterCompressionBytes: stages.payload, deltaMode: 'fossil', compressionMode: 'gzip-1', xorZstd3Bytes: xorZstd.payload },
      adaptive: { adaptiveSeconds: round(adaptive.seconds), bestStaticSeconds: round(statics[0]!.seconds), bestStaticMode: statics[0]!.mode, averageStaticSeconds: round(averageStatic), switches: adaptive.switches },
    }));
  }
  await Promise.allSettled([ram.close(), baseMemory.close(), baseDisk.close()]);
  await cap.cloudlet.destroyAll();
  await cap.cloudlet.stop();
} finally {
  await pool.close();
  await root.remove();
}

async function fullPass(lists: ChunkList[], mode: ModeId, dedup: DedupIndex, source: ChunkReader, base: ChunkReader) {
  const s = { input: 0, afterDedup: 0, raw: 0, payload: 0, zero: 0, baseRefs: 0, selfRefs: 0 };
  for await (const b of encodeOverlay(lists, { pool, dedup: dedup.forOverlay(), source, base, currentMode: () => mode })) {
    s.input += b.inputBytes;
    s.afterDedup += b.stages.data * BLOCK_SIZE;
    s.raw += b.rawBytes;
    s.payload += b.payload.length;
    s.zero += b.stages.zero;
    s.baseRefs += b.stages.baseRefs;
    s.selfRefs += b.stages.selfRefs;
  }
  return s;
}

async function measure(mode: ModeId, lists: ChunkList[], dedup: DedupIndex, source: ChunkReader, base: ChunkReader) {
  const started = performance.now();
  let input = 0;
  let out = 0;
  for await (const b of encodeOverlay(lists, { pool, dedup: dedup.forOverlay(), source, base, currentMode: () => mode })) {
    input += b.inputBytes;
    out += b.payload.length;
  }
  const seconds = (performance.now() - started) / 1000;
  return { P: input / MB / seconds, r: out / Math.max(1, input) };
}

function splitHalves(lists: ChunkList[]): [ChunkList[], ChunkList[]] {
  const all = lists.flatMap((l) => l.indices.map((index) => ({ space: l.space, index })));
  const mid = Math.floor(all.length / 2);
  const group = (xs: typeof all): ChunkList[] =>
    [Space.Memory, Space.Disk].map((space) => ({ space, indices: xs.filter((x) => x.space === space).map((x) => x.index) })).filter((l) => l.indices.length);
  return [group(all.slice(0, mid)), group(all.slice(mid))];
}

/** Evenly spaced runs of a batch each, `chunks` in all. */
function sample(lists: ChunkList[], chunks: number): ChunkList[] {
  return lists.map((l) => {
    const share = Math.max(CHUNKS_PER_BATCH, Math.round((chunks * l.indices.length) / lists.reduce((s, x) => s + x.indices.length, 0)));
    if (l.indices.length <= share) return l;
    const runs = Math.ceil(share / CHUNKS_PER_BATCH);
    const stride = Math.floor(l.indices.length / runs);
    const picked: number[] = [];
    for (let k = 0; k < runs; k++) picked.push(...l.indices.slice(k * stride, k * stride + CHUNKS_PER_BATCH));
    return { space: l.space, indices: picked };
  });
}

function harmonic(xs: number[]): number {
  return xs.length / xs.reduce((s, x) => s + 1 / x, 0);
}
function round(n: number, d = 2): number {
  return Math.round(n * 10 ** d) / 10 ** d;
}
function mb(bytes: number): string {
  return `${(bytes / MB).toFixed(1)} MB`;
}
