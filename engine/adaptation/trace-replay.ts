import type { StreamMeasurements } from './measurements.js';
import type { ModeId } from './mode.js';
import type { StreamTrace } from './stream-trace.js';

/** A mode policy as the stream runs it: the measurements now, the mode in use and for how long. */
export type ModePolicy = (m: StreamMeasurements, current: ModeId, heldMs: number) => ModeId;

export interface ReplayResult {
  seconds: number;
  switches: Array<{ atMs: number; to: ModeId }>;
}

export interface RegretReport {
  /** Input MB the trace's stream moved, which every replay moves too. */
  inputMB: number;
  policy: ReplayResult;
  /** Each mode measured in the trace, alone from start to end, fastest first. */
  statics: Array<{ mode: ModeId; seconds: number }>;
  /** policy seconds / best static seconds: 1 is as good as the best mode in hindsight. */
  regret: number;
}

/**
 * What `read` finds in the trace at `atMs`: from the latest tick at or before then where it finds
 * something, else from the first one after; null if no tick has it.
 */
function figureAt<T>(trace: StreamTrace, atMs: number, read: (tick: StreamMeasurements) => T | null): T | null {
  let found: T | null = null;
  for (const t of trace.ticks) {
    const v = read(t);
    if (v === null) continue;
    if (t.atMs > atMs && found !== null) break;
    found = v;
    if (t.atMs > atMs) break;
  }
  return found;
}

/**
 * What `mode` achieved at `atMs` in the trace: its figures from the latest tick at or before then
 * that measured it (the stream's own or a sample), else from the first one after. Samples measure
 * P from pool busy time; the replay inherits that bias, and pays nothing for a switch (a codec's
 * cold start): it compares policies on the same conditions, it does not predict a handoff's time.
 */
export function modeAt(trace: StreamTrace, mode: ModeId, atMs: number): { P_MBps: number; ratio: number } | null {
  return figureAt(trace, atMs, (t) => {
    const m = t.modes.find((x) => x.mode === mode && x.P_MBps > 0 && x.ratio > 0);
    return m ? { P_MBps: m.P_MBps, ratio: m.ratio } : null;
  });
}

/**
 * The link rate at `atMs`, Mbit/s: the latest measured at or before then, else the first measured
 * after; Infinity if the trace never saw the link busy (the pipeline, not the link, was the limit).
 */
export function linkAt(trace: StreamTrace, atMs: number): number {
  return figureAt(trace, atMs, (t) => (t.R_Mbps !== null && t.R_Mbps > 0 ? t.R_Mbps : null)) ?? Infinity;
}

const inputMBOf = (trace: StreamTrace) => trace.ticks.at(-1)!.inputBytes / 1e6;
const stepMsOf = (trace: StreamTrace) => {
  const t = trace.ticks;
  return t.length > 1 ? Math.max(100, (t.at(-1)!.atMs - t[0]!.atMs) / (t.length - 1)) : 1_000;
};

/**
 * Moves the trace's input under the conditions recorded, one tick at a time, with the mode
 * `pick` names for each tick; past the trace's end the last tick's conditions hold.
 */
function run(trace: StreamTrace, pick: (tick: StreamMeasurements, atMs: number) => ModeId): number {
  const total = inputMBOf(trace);
  const stepMs = stepMsOf(trace);
  let moved = 0;
  for (let k = 0; k < 100_000; k++) {
    const atMs = trace.ticks[0]!.atMs + k * stepMs;
    const tick = trace.ticks[Math.min(k, trace.ticks.length - 1)]!;
    const mode = pick(tick, atMs);
    const m = modeAt(trace, mode, atMs);
    if (!m) throw new Error(`trace ${trace.handoffId}: mode ${mode} was never measured, so it cannot be replayed`);
    const MBps = Math.min(m.P_MBps, linkAt(trace, atMs) / 8 / m.ratio);
    const step = (MBps * stepMs) / 1000;
    if (moved + step >= total) return (k * stepMs + ((total - moved) / MBps) * 1000) / 1000;
    moved += step;
  }
  throw new Error(`trace ${trace.handoffId}: the replay moved ${moved.toFixed(1)} of ${total.toFixed(1)} MB in 100000 steps`);
}

/** The seconds one mode, used throughout, takes over the trace's conditions. */
export function staticSeconds(trace: StreamTrace, mode: ModeId): number {
  return run(trace, () => mode);
}

/**
 * The seconds `policy` takes: it starts in the trace's first mode and is asked at every tick,
 * with the measurements the live stream had then, which mode to use for the next.
 */
export function policySeconds(trace: StreamTrace, policy: ModePolicy): ReplayResult {
  let current = trace.ticks[0]!.mode;
  let since = trace.ticks[0]!.atMs;
  const switches: ReplayResult['switches'] = [];
  const seconds = run(trace, (tick, atMs) => {
    const use = current;
    const next = policy({ ...tick, mode: current }, current, atMs - since);
    if (next !== current) {
      switches.push({ atMs, to: next });
      current = next;
      since = atMs;
    }
    return use;
  });
  return { seconds, switches };
}

/** Every mode measured anywhere in the trace. */
export function measuredModes(trace: StreamTrace): ModeId[] {
  return [...new Set(trace.ticks.flatMap((t) => t.modes.filter((m) => m.P_MBps > 0 && m.ratio > 0).map((m) => m.mode)))].sort();
}

/** `policy` against each measured mode used alone, on the same trace. */
export function regretOf(trace: StreamTrace, policy: ModePolicy): RegretReport {
  const statics = measuredModes(trace)
    .map((mode) => ({ mode, seconds: staticSeconds(trace, mode) }))
    .sort((a, b) => a.seconds - b.seconds);
  const p = policySeconds(trace, policy);
  return { inputMB: inputMBOf(trace), policy: p, statics, regret: p.seconds / statics[0]!.seconds };
}
