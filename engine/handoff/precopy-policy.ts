import type { PostCopyPolicy } from '../contract.js';

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
  /**
   * Whether a pre-copy that will not converge may switch to post-copy (the target resumes with
   * the pages still stale missing, and fetches them from the stopped source): `auto` lets the
   * stop rule choose it, `never` keeps the old ending (slow the guest, then stop and copy the
   * rest). An operator's choice per handoff, as KubeVirt's allowPostCopy: mid post-copy the VM's
   * state is split between two hosts, so a source host that dies then loses it.
   */
  postCopy: PostCopyPolicy;
}


// `never` until the handoff carries post-copy through (issue 15): the rule already chooses it.
export const DEFAULT_PRECOPY: PrecopyPolicy = { downtimeBudgetMs: 300, maxLiveEpochs: 8, sentChunkCacheMiB: 256, postCopy: 'never' };

/** An epoch that does not shrink the dirty set by this much counts against convergence. */
export const SHRINK = 0.9;

/**
 * What the pre-copy did at an epoch's end, and the figures it did it on: the record an auditor
 * reads in the handoff's history (one per epoch, not one per second).
 *  - continue: what is left would not go within the budget, and the dirty set shrank;
 *  - slow-guest: it did not shrink, so the guest is paused a larger share of its time;
 *  - catch-up: converged, another short live epoch for what the guest dirtied while the link drained;
 *  - stop: the VM is paused for the last epoch (converged, or why not);
 *  - post-copy: it will not converge in time, so the VM pauses and resumes at the target with
 *    the pages still stale fetched from here on demand.
 */
export type PrecopyAction = 'continue' | 'slow-guest' | 'catch-up' | 'stop' | 'post-copy';

export interface PrecopyDecision {
  /** The live epoch that just ended (for catch-up, the one it opens). */
  epoch: number;
  action: PrecopyAction;
  reason: string;
  /** Chunks (4 KiB pages and blocks) left to send. */
  pendingChunks: number;
  /** Their estimated send time, ms, against the budget. */
  estimateMs: number;
  budgetMs: number;
  /**
   * What the estimate rests on: the rate the link kept lately, from acks (the low quantile of its
   * per-second rates over 15 s; null: not measured), and wire bytes per input byte.
   */
  R_Mbps: number | null;
  ratio: number;
  /** Bytes the guest dirtied per second of the epoch that just ended. */
  dirtyBytesPerS: number | null;
  /** Share of its time the guest is paused to let the epochs converge (0 when not slowed). */
  guestPausedShare: number;
  /** Milliseconds since the stream started. */
  atMs: number;
}
