import type { StreamMeasurements } from '../adaptation/measurements.js';
import type { ModeId } from '../adaptation/mode.js';
import type { PrecopyDecision } from './precopy-policy.js';

/**
 * How a running stream is steered from outside: which mode to use for the next batch, the
 * bandwidth cap, and where measurements go. The Temporal activity implements it with signals
 * and queries; tests and benchmarks with plain values. `report` is called every second or so:
 * the receiver decides what of it to keep.
 */
export interface StreamControl {
  mode(): ModeId;
  bandwidthCapMbps(): number | null;
  report(m: StreamMeasurements): void;
  /** The operator pinned the mode: nothing decides on other modes' samples, so none are taken. */
  pinned?(): boolean;
  /** Each pre-copy decision, with its figures, as the stream takes it. */
  decided?(d: PrecopyDecision): void;
}

export function fixedControl(mode: ModeId, capMbps: number | null = null, onReport: (m: StreamMeasurements) => void = () => undefined): StreamControl {
  return { mode: () => mode, bandwidthCapMbps: () => capMbps, report: onReport, pinned: () => true };
}
