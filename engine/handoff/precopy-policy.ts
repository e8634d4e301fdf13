/**
 * The pre-copy's rules, as data: what the stream (overlay-stream.ts) iterates by, and what a
 * forecast of it (placement/forecast-handoff.ts) mirrors. Pure, so a client imports it without
 * the stream's engine.
 */
export interface PrecopyPolicy {
  /** Stop iterating once what is left should go within this (at the last epoch's rate). */
  downtimeBudgetMs: number;
  maxLiveEpochs: number;
  /**
   * Bytes last sent per chunk kept at the source so a chunk sent again goes as an XOR with them
   * (SentChunkCache). As much as the QEMU-tuned baseline's XBZRLE cache in the benchmark.
   */
  sentChunkCacheMiB: number;
}

export const DEFAULT_PRECOPY: PrecopyPolicy = { downtimeBudgetMs: 300, maxLiveEpochs: 8, sentChunkCacheMiB: 256 };

/** An epoch that does not shrink the dirty set by this much counts against convergence. */
export const SHRINK = 0.9;
