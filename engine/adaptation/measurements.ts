import type { ModeId } from './mode.js';

/** What the source measured, as it reports it to the workflow. Plain data (it travels in signals). */
export interface ModeMeasurement {
  mode: ModeId;
  /** Processing throughput on the pool now: input MB per second. */
  P_MBps: number;
  /** Output bytes / input bytes. */
  ratio: number;
  /** Where the figures come from: the live stream, or a background sample. */
  from: 'stream' | 'sample';
  /** Input bytes behind the figures. */
  bytes: number;
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
}
