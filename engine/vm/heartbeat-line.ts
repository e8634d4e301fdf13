/**
 * The guest workloads' heartbeat on the console: "HB <n> <work>", `n` counting beats and `work`
 * the workload's own progress counter (rows, frames, records; infra/guest/workloads/beat.h). A
 * line without the work counter (an older guest) still counts as a beat.
 */
export const HEARTBEAT_LINES = /^HB (\d+)(?: (\d+))?\s*$/gm;

export interface HeartbeatLine {
  counter: number;
  /** The workload's progress counter; null from a guest that prints none. */
  work: number | null;
}

export function parseHeartbeatLine(line: string): HeartbeatLine | null {
  const m = /^HB (\d+)(?: (\d+))?\s*$/.exec(line);
  return m ? { counter: Number(m[1]), work: m[2] === undefined ? null : Number(m[2]) } : null;
}
