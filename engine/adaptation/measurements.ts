import type { ModeId } from './mode.js';

/** What the source measured, as it reports it to the workflow. Plain data (it travels in signals). */
export interface ModeMeasurement {
  mode: ModeId;
  /** Processing throughput now: input MB per second (see P_from). */
  P_MBps: number;
  /** Output bytes / input bytes. */
  ratio: number;
  /** Where the figures come from: the live stream, or a background sample. */
  from: 'stream' | 'sample';
  /** Input bytes behind the figures. */
  bytes: number;
  /**
   * Where P comes from: `achieved` — input per wall-clock second while the pipeline, not the
   * link, held the stream back (the CPU free now, guest and QEMU included); `pool` — the pool's
   * busy time, scaled by how far achieved fell short of it on the streamed mode; `relative` — P
   * and r of the streamed mode, scaled by how this mode compared with it on the same sampled
   * chunks (reports until issue 14's sixth session; a sampled mode's P is its own pool time
   * since, only its r relative). Absent in reports from before it was added.
   */
  P_from?: 'achieved' | 'pool' | 'relative';
  /** P and r at the pessimistic end of what the measurement allows (see StreamProfiler). */
  P_lowMBps?: number;
  ratioHigh?: number;
}

/** Where the pre-copy stands: the epoch, how far into it, and what the stop rule predicts. */
export interface PrecopyProgress {
  epoch: number;
  live: boolean;
  /** Chunks (4 KiB pages and blocks) the epoch sends; null for the stopped epoch, found as it is scanned. */
  epochChunks: number | null;
  chunksSent: number;
  /** Bytes the guest dirtied per second while the previous epoch was sent; null in the first. */
  dirtyBytesPerS: number | null;
  /** The stop rule's estimate of the stopped epoch's send time if the VM stopped now; null in the first epoch. */
  predictedDowntimeMs: number | null;
}

export interface StreamMeasurements {
  /** Milliseconds since the stream started. */
  atMs: number;
  mode: ModeId;
  /** Network throughput from the target's acknowledgements, Mbit/s; null until measured. */
  R_Mbps: number | null;
  threads: number;
  inputBytes: number;
  wireBytes: number;
  modes: ModeMeasurement[];
  /** Absent in reports from before it was added. */
  precopy?: PrecopyProgress;
}
