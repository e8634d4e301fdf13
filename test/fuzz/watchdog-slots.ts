/** The watchdog's shared memory (see watchdog-thread.mjs): numbers the main thread and the watchdog thread both read and write. */
export const SLOT = {
  /** The running case, or -1 between cases. */
  caseIndex: 0,
  caseStartedAt: 1,
  peakRss: 2,
  /** Peak since the running case began. */
  casePeakRss: 3,
  /** Bytes of the running case's description in the text buffer. */
  textLength: 4,
} as const;
export const SLOTS = 5;
/** Room for a case's replay description: its mutations and the start of its input in hex. */
export const TEXT_BYTES = 4096;

export interface WatchdogData {
  slots: SharedArrayBuffer;
  slot: typeof SLOT;
  text: SharedArrayBuffer;
  /** The command that replays a case, but for its index. */
  replayPrefix: string;
  stuckBoundMs: number;
  rssKillBytes: number;
  sampleMs: number;
}
