import type { ModeMeasurement } from './measurements.js';
import { parseModeId, type ModeId } from './mode.js';
import { SWITCH_MARGIN } from './choose-mode.js';

/**
 * Which other modes the stream tries next on a sample of its recent chunks. Sampling is not
 * free: on two cores, where the guest's vCPU and QEMU compete with the pipeline, round-robin
 * over every mode spent a quarter of a core on samples of modes that could never win (xz-9,
 * zstd-19, fossil at a few MB/s while the stream moved 6 MB/s of input). Two rules, both from
 * measurements of this stream, none from an offline profile:
 *
 * - A mode cannot move input faster than it processes it (its effective rate is min(P, R/r)
 *   ≤ P). So a mode whose measured P — or the P of a lighter mode of its family, which it does
 *   not beat: a higher level of the same codec, or the same delta with any codec after no codec —
 *   is below what the current mode achieves, with room for a sample's noise, is not sampled again.
 * - Samples get at most a share of one core over the stream (SAMPLE_CPU_SHARE).
 * - A mode that would win at its estimate (by the switch margin) is sampled again first: only
 *   more samples narrow its doubt to a decision. Several take turns: ordered by estimate, the
 *   best took every round (zstd-15 at 10 Mbit/s, 300 ms of a thread a sample, the whole
 *   sampling budget) and zstd-9, as good a ratio at a seventh of the cost, was sampled once in
 *   a 50 s handoff; the stream went to gzip-9 at 35 s.
 */

/** A sample's P may be this much too low (one batch, encoded beside others on a shared pool). */
export const SAMPLE_P_DOUBT = 0.5;
/**
 * Samples may use this share of one core, counted over the stream so far. Samples are whole
 * batches: at a tenth of a core, a 90 s handoff at 5 Mbit/s sampled zstd-15 and zstd-16 twice
 * each, too few to trust either.
 */
export const SAMPLE_CPU_SHARE = 0.2;

export interface SamplePick {
  modes: ModeId[];
  /** Where the round-robin goes on next time. */
  cursor: number;
  /** Modes left out because a measurement shows they cannot beat the current one. */
  dominated: ModeId[];
}

/** Is `lighter` a mode that `heavier` cannot process faster than? (Itself included.) */
export function boundsFromAbove(lighter: ModeId, heavier: ModeId): boolean {
  const l = parseModeId(lighter);
  const h = parseModeId(heavier);
  if (l.delta !== h.delta) return false;
  if (l.codec === 'none') return true;
  return l.codec === h.codec && l.level <= h.level;
}

/**
 * Up to `count` modes to sample, round-robin over `candidates` from `cursor`, leaving out the
 * current mode and every mode bounded below the current mode's effective rate.
 * `currentEffMBps`: what the current mode moves now, input MB/s (null: not known yet, nothing
 * is left out).
 */
export function modesToSample(o: {
  candidates: readonly ModeId[];
  current: ModeId;
  measured: readonly ModeMeasurement[];
  currentEffMBps: number | null;
  count: number;
  cursor: number;
  /**
   * Other modes' effective rates at their estimates (input MB/s; null where not known): a mode
   * that would beat the current one at its estimate by the switch margin is sampled again first
   * — only more samples can narrow its doubt to a decision.
   */
  estimatedEffMBps?: ReadonlyMap<ModeId, number | null>;
  /**
   * The round each mode was last sampled in: contenders take turns, the one sampled longest ago
   * first (without it, the best estimate first).
   */
  lastSampledRound?: ReadonlyMap<ModeId, number>;
}): SamplePick {
  const slow = o.currentEffMBps === null ? [] : o.measured.filter((m) => m.mode !== o.current && m.P_MBps * (1 + SAMPLE_P_DOUBT) < o.currentEffMBps!).map((m) => m.mode);
  const open: ModeId[] = [];
  const dominated: ModeId[] = [];
  for (const mode of o.candidates) {
    if (mode === o.current) continue;
    (slow.some((s) => boundsFromAbove(s, mode)) ? dominated : open).push(mode);
  }
  const modes: ModeId[] = [];
  // Contenders first, in turn, leaving a slot of a round of more than one for the
  // round-robin, so every mode keeps being tried as conditions change.
  const current = o.currentEffMBps;
  const contenders = current === null ? [] : open
    .map((mode) => ({ mode, eff: o.estimatedEffMBps?.get(mode) ?? null }))
    .filter((c): c is { mode: ModeId; eff: number } => c.eff !== null && c.eff > current * (1 + SWITCH_MARGIN))
    .map((c) => ({ ...c, last: o.lastSampledRound?.get(c.mode) ?? -1 }))
    .sort((a, b) => a.last - b.last || b.eff - a.eff)
    .slice(0, o.count > 1 ? o.count - 1 : o.count)
    .map((c) => c.mode);
  modes.push(...contenders);
  const rest = open.filter((m) => !contenders.includes(m));
  let cursor = o.cursor;
  for (let i = 0; modes.length < o.count && i < rest.length; i++) modes.push(rest[cursor++ % rest.length]!);
  return { modes, cursor, dominated };
}

/** May another sample start, given the pool time samples took so far over the stream's time? */
export function sampleBudgetAllows(samplingBusyMs: number, streamElapsedMs: number): boolean {
  return samplingBusyMs <= SAMPLE_CPU_SHARE * streamElapsedMs;
}
