import { open } from 'node:fs/promises';
import { ALL_MODES, modeId, type ModeId } from '../adaptation/mode.js';
import { StreamProfiler } from '../adaptation/stream-profiler.js';
import type { CodecPool } from '../pipeline/codec-pool.js';
import { Space, type ChunkRecord } from '../pipeline/chunk-records.js';
import { baseChunkReader, vmChunkReader } from '../pipeline/chunk-source.js';
import type { DedupIndex } from '../pipeline/dedup-index.js';
import { encodeOverlay, type StageCounts } from '../pipeline/overlay-encoder.js';
import type { VmInstance } from '../cloudlet/vm-instance.js';
import { sendOverlay, type DataEndpoint } from '../wire/overlay-sender.js';
import type { Ack } from '../wire/frames.js';
import type { StreamControl } from './stream-control.js';

export interface OverlayStreamResult {
  bytesSent: number;
  ack: Ack;
  streamMs: number;
  stages: StageCounts & { inputBytes: number; rawBytes: number; payloadBytes: number };
  modesUsed: Record<ModeId, number>;
}

/** How often the stream reports its measurements (and checks for a sharp change in R). */
const REPORT_EVERY_MS = 1_000;
/** How often a few other modes are tried on a sample of recent chunks. */
const SAMPLE_EVERY_MS = 1_500;
const MODES_PER_SAMPLE = 4;
const SAMPLE_CHUNKS = 64;

/**
 * Streams a stopped VM's overlay (changed memory pages, dirty disk blocks, device state) through
 * the pipeline to the target, measuring P, r and R as it goes and following `control`'s mode.
 */
export async function streamOverlay(opts: {
  handoffId: string;
  vm: VmInstance;
  memoryPages: number[];
  diskBlocks: number[];
  endpoint: DataEndpoint;
  pool: CodecPool;
  dedup: DedupIndex;
  control: StreamControl;
}): Promise<OverlayStreamResult> {
  const { vm, pool, control } = opts;
  const started = Date.now();
  const [ram, baseMemory, baseDisk] = await Promise.all([
    open(vm.files.ramFile, 'r'),
    open(vm.base.path('memory'), 'r'),
    open(vm.base.path('disk'), 'r'),
  ]);
  const profiler = new StreamProfiler(pool.threads);
  const stages = { chunks: 0, zero: 0, baseRefs: 0, selfRefs: 0, data: 0, inputBytes: 0, rawBytes: 0, payloadBytes: 0 };
  const modesUsed: Record<ModeId, number> = {};
  let latest: ChunkRecord[] = [];
  let lastReportedR: number | null = null;
  const report = () => {
    const m = profiler.measurements(control.mode());
    lastReportedR = m.R_Mbps;
    control.report(m);
  };
  const reporter = setInterval(report, REPORT_EVERY_MS);
  let sampleCursor = 0;
  let sampling = false;
  const sampler = setInterval(() => {
    if (sampling || latest.length === 0) return;
    sampling = true;
    const records = latest.filter((r) => r.kind === 'data').slice(0, SAMPLE_CHUNKS);
    const current = control.mode();
    const candidates = ALL_MODES.map(modeId).filter((m) => m !== current);
    const picked = Array.from({ length: MODES_PER_SAMPLE }, () => candidates[sampleCursor++ % candidates.length]!);
    void Promise.all(
      picked.map(async (mode) => {
        if (records.length === 0) return;
        const r = await pool.encode({ modeId: mode, records });
        profiler.recordSample(mode, records.length * 4096, r.payload.length, r.busyMs);
      }),
    )
      // A failed sample only costs a measurement; the stream goes on.
      .catch(() => undefined)
      .finally(() => (sampling = false));
  }, SAMPLE_EVERY_MS);
  try {
    const source = vmChunkReader(ram, vm.base.manifest.memory.sizeBytes, vm.disk);
    const base = baseChunkReader(baseMemory, vm.base.manifest.memory.sizeBytes, baseDisk, vm.base.manifest.disk.sizeBytes);
    const batches = encodeOverlay(
      [
        { space: Space.Memory, indices: opts.memoryPages },
        { space: Space.Disk, indices: opts.diskBlocks },
      ],
      { pool, dedup: opts.dedup.forOverlay(), source, base, currentMode: () => control.mode(), onClassified: (r) => (latest = r) },
    );
    const { bytesSent, ack } = await sendOverlay(
      opts.endpoint,
      { handoffId: opts.handoffId, deviceStatePath: vm.files.deviceState, batches, capMbps: () => control.bandwidthCapMbps() },
      {
        sent: (b, frameBytes) => {
          profiler.recordBatch(b, frameBytes);
          for (const k of ['chunks', 'zero', 'baseRefs', 'selfRefs', 'data'] as const) stages[k] += b.stages[k];
          stages.inputBytes += b.inputBytes;
          stages.rawBytes += b.rawBytes;
          stages.payloadBytes += b.payload.length;
          modesUsed[b.modeId] = (modesUsed[b.modeId] ?? 0) + 1;
        },
        acked: (a) => {
          profiler.recordAck(a);
          const R = profiler.R_Mbps();
          // A sharp change in R is reported at once, not at the next tick.
          if (R !== null && (lastReportedR === null || Math.abs(R - lastReportedR) > 0.3 * lastReportedR)) report();
        },
      },
    );
    report();
    return { bytesSent, ack, streamMs: Date.now() - started, stages, modesUsed };
  } finally {
    clearInterval(reporter);
    clearInterval(sampler);
    await Promise.allSettled([ram.close(), baseMemory.close(), baseDisk.close()]);
  }
}
