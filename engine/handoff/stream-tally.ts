import type { ModeId } from '../adaptation/mode.js';
import type { StageTotals } from '../contract.js';
import type { EncodedBatch } from '../pipeline/overlay-encoder.js';

/** A re-sending epoch's compression ratio is trusted from this much input on (64 chunks). */
const MIN_RATIO_INPUT_BYTES = 64 * 4096;

/**
 * What the stream has handed to the link: stage counts, bytes and batches per mode, and the
 * compression the final epoch is estimated at.
 */
export class StreamTally {
  readonly stages: StageTotals = { chunks: 0, zero: 0, baseRefs: 0, selfRefs: 0, data: 0, againstPrevious: 0, inputBytes: 0, rawBytes: 0, payloadBytes: 0 };
  readonly modesUsed: Record<ModeId, number> = {};
  /** Compressed / input bytes of the last live re-sending epoch that sent enough to tell. */
  private recentRatio: number | null = null;

  /** A batch handed to the sender. */
  sent(b: EncodedBatch): void {
    const s = this.stages;
    for (const k of ['chunks', 'zero', 'baseRefs', 'selfRefs', 'data', 'againstPrevious'] as const) s[k] += b.stages[k];
    s.inputBytes += b.inputBytes;
    s.rawBytes += b.rawBytes;
    s.payloadBytes += b.payload.length;
    this.modesUsed[b.modeId] = (this.modesUsed[b.modeId] ?? 0) + 1;
  }

  /** Where the counters stand as an epoch starts; `epochEnded` takes it back. */
  epochStarts(): { input: number; payload: number } {
    return { input: this.stages.inputBytes, payload: this.stages.payloadBytes };
  }

  /**
   * An epoch whose every batch was handed to the sender. A live re-sending epoch (n > 0) sets
   * the ratio the stop is estimated at: its chunks are like the final epoch's (pages dirtied
   * again, most sent as XORs with their previous send); the first epoch's ratio says little
   * about them.
   */
  epochEnded(mark: { input: number; payload: number }, n: number, live: boolean): void {
    const input = this.stages.inputBytes - mark.input;
    if (live && n > 0 && input >= MIN_RATIO_INPUT_BYTES) this.recentRatio = (this.stages.payloadBytes - mark.payload) / input;
  }

  /** The ratio to estimate the final epoch at: the last re-sending epoch's, else all so far's. */
  ratioNow(): number {
    return this.recentRatio ?? (this.stages.inputBytes > 0 ? this.stages.payloadBytes / this.stages.inputBytes : 1);
  }
}
