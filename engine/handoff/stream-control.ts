import type { StreamMeasurements } from '../adaptation/measurements.js';
import type { ModeId } from '../adaptation/mode.js';

/**
 * How a running stream is steered from outside: which mode to use for the next batch, the
 * bandwidth cap, and where measurements go. The Temporal activity implements it with signals
 * and queries; tests and benchmarks with plain values.
 */
export interface StreamControl {
  mode(): ModeId;
  bandwidthCapMbps(): number | null;
  report(m: StreamMeasurements): void;
}

export function fixedControl(mode: ModeId, capMbps: number | null = null, onReport: (m: StreamMeasurements) => void = () => undefined): StreamControl {
  return { mode: () => mode, bandwidthCapMbps: () => capMbps, report: onReport };
}
