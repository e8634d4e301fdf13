import { ALL_MODES, modeId, type ModeId } from '../adaptation/mode.js';
import { effectiveMBps } from '../adaptation/choose-mode.js';
import { modesToSample, sampleBudgetAllows } from '../adaptation/sample-plan.js';
import type { StreamProfiler } from '../adaptation/stream-profiler.js';
import type { CodecPool } from '../pipeline/codec-pool.js';
import type { ChunkRecord } from '../pipeline/chunk-records.js';
import { CHUNKS_PER_BATCH } from '../pipeline/overlay-encoder.js';
import type { StreamControl } from './stream-control.js';

/** How often a few other modes are tried on a sample of recent chunks. */
const SAMPLE_EVERY_MS = 1_500;
/** Per round, beside the reference: three whole batches on a two-thread pool. */
const MODES_PER_SAMPLE = 2;
const SAMPLE_CANDIDATES = ALL_MODES.map(modeId);
/**
 * A whole batch, not a slice of one: per byte, a codec's cost depends on how much it is given.
 * On kvstore's chunks, zstd-3 ran at 136 MB/s on 64 chunks and 306 on 256 (a fixed cost per
 * job), zstd-16 at 8.1 and 4.5 (its match search deepens as the input grows), so a 64-chunk
 * comparison misjudged their ratio fourfold. The sampling budget pays for the larger samples.
 */
const SAMPLE_CHUNKS = CHUNKS_PER_BATCH;

/**
 * The stream's background samples: every SAMPLE_EVERY_MS, a few modes the sample plan leaves
 * open are encoded on the data chunks of the batch classified last, beside the streamed mode on
 * the same chunks (the others are judged against it: StreamProfiler.recordSample). Within the
 * sampling budget, never while the operator pins the mode, one round at a time, and only onto
 * an idle pool.
 */
export class ModeSampler {
  private latest: ChunkRecord[] = [];
  private cursor = 0;
  private running = false;
  private round: Promise<unknown> = Promise.resolve();
  private busyMs = 0;
  private readonly timer: NodeJS.Timeout;
  private readonly lastSampledRound = new Map<ModeId, number>();
  private lastRoundBatch: ChunkRecord[] | undefined;
  /** Rounds started so far: a batch cycle that saw one start was slowed by it. */
  roundsStarted = 0;

  constructor(private readonly o: { pool: CodecPool; profiler: StreamProfiler; control: StreamControl; startedAtMs: number }) {
    this.timer = setInterval(() => this.tick(), SAMPLE_EVERY_MS);
  }

  /** The records of the batch just classified: the next round's material. */
  offer(records: ChunkRecord[]): void {
    this.latest = records;
  }

  /** No further rounds; resolves once the running one ended (the stop-time scan wants every pool thread). */
  async stop(): Promise<void> {
    this.cancel();
    await this.round.catch(() => undefined);
  }

  /** A round is on the pool now. */
  get busy(): boolean {
    return this.running;
  }

  /** No further rounds (the running one may still finish). */
  cancel(): void {
    clearInterval(this.timer);
  }

  private tick(): void {
    const { pool, profiler, control } = this.o;
    // Only onto an idle pool: a round queued ahead of the stream's batches delays them, and
    // those delays would read as the pipeline's pace (StreamProfiler.recordDelivery).
    if (this.running || this.latest.length === 0 || control.pinned?.() || pool.queued > 0) return;
    if (!sampleBudgetAllows(this.busyMs, Date.now() - this.o.startedAtMs)) return;
    // Each round on a batch no round had: the same chunks twice would agree with themselves and
    // read as a certainty (a stream held back by the link can leave one batch the latest for seconds).
    if (this.latest === this.lastRoundBatch) return;
    // The batch as it went, zero and reference records included: the stream's P counts every
    // chunk, so a sample's must too, or a mode's P reads low by the batch's share of them.
    const records = this.latest.slice(0, SAMPLE_CHUNKS);
    if (!records.some((r) => r.kind === 'data')) return;
    const current = control.mode();
    const m = profiler.measurements(current);
    const policy = { bandwidthCapMbps: control.bandwidthCapMbps() };
    const pick = modesToSample({
      candidates: SAMPLE_CANDIDATES, current, measured: m.modes, count: MODES_PER_SAMPLE, cursor: this.cursor,
      currentEffMBps: effectiveMBps(m, current, policy),
      estimatedEffMBps: new Map(m.modes.map((x) => [x.mode, effectiveMBps(m, x.mode, policy)])),
      lastSampledRound: this.lastSampledRound,
    });
    this.cursor = pick.cursor;
    if (pick.modes.length === 0) return;
    this.running = true;
    this.lastRoundBatch = this.latest;
    this.roundsStarted++;
    for (const mode of pick.modes) this.lastSampledRound.set(mode, this.roundsStarted);
    const encoded = async (mode: ModeId) => {
      const r = await pool.encode({ modeId: mode, records });
      this.busyMs += r.busyMs;
      return { mode, outBytes: r.payload.length, busyMs: r.busyMs };
    };
    const reference = encoded(current);
    // Settled, not all: the round is over only when every encode of it has left the pool. A
    // failed sample only costs a measurement; the stream goes on.
    this.round = Promise.allSettled(
      pick.modes.map(async (mode) => {
        const [r, ref] = await Promise.all([encoded(mode), reference]);
        profiler.recordSample(mode, records.length * 4096, r.outBytes, r.busyMs, ref);
      }),
    )
      .then(() => reference.catch(() => undefined))
      .finally(() => (this.running = false));
  }
}
