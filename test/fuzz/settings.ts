/** What one fuzz run does and the bounds it holds the receiving side to: one home for each. */
export interface FuzzSettings {
  /** Every case's input follows from (seed, index) alone: a failure replays with `--seed S --only I`. */
  seed: number;
  cases: number;
  /** Run only this case index (a replay). */
  only?: number;
  /** Every K-th case goes over a real TLS connection; the rest stay in memory (a socket case costs a handshake). */
  socketEvery: number;
  /** After this many socket cases, a fresh valid overlay must still stream through the same server. */
  livenessEvery: number;
  /**
   * Longer than this and a case failed as a hang. The largest input is a few MiB, which the
   * decoder and applier take in tens of milliseconds; a loaded 2-core machine stays far below it.
   */
  caseTimeBoundMs: number;
  /**
   * A case still running this long is stopped, with the whole run, from a watchdog thread: one
   * that blocks the event loop (a loop, an inflation of gigabytes) never reaches its own bound.
   */
  stuckBoundMs: number;
  /** Peak resident memory of the whole process; a case that pushes it past fails as 'memory'. */
  rssBoundBytes: number;
  /** Past this the watchdog ends the process before the machine runs out of memory. */
  rssKillBytes: number;
  /** The run stops after this many failed cases: a receiver that fails one way fails it often, and slowly. */
  maxFailures: number;
}

export const DEFAULT_SETTINGS: Omit<FuzzSettings, 'seed' | 'cases'> = {
  socketEvery: 4,
  livenessEvery: 200,
  caseTimeBoundMs: 2_000,
  stuckBoundMs: 30_000,
  rssBoundBytes: 1 << 30,
  rssKillBytes: 4 * (1 << 30),
  maxFailures: Infinity,
};
