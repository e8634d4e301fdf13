/**
 * The load monitor's two decisions: whether a cloudlet is overloaded (above a threshold for long
 * enough that a move is worth its cost), and which of its VMs to move to relieve it most cheaply.
 */

/** A cloudlet's load at one moment: busy vCPU time over its capacity, 0..1 (or more, when oversubscribed). */
export interface LoadSample {
  atMs: number;
  load: number;
}

/** Above this share of its capacity a cloudlet's guests start to wait for CPU. */
export const OVERLOAD_THRESHOLD = 0.85;
/**
 * How long the load must stay above the threshold. A handoff costs ~25 s of a source core and
 * tens of MB of WAN (bench:handoff --quick, kvstore at 10 Mbit/s); a spike shorter than that is
 * cheaper to sit out than to move away from.
 */
export const SUSTAIN_MS = 30_000;

/**
 * Overloaded when every sample of the last `sustainMs` is above `threshold` and the samples
 * reach back that far (no verdict on a window not yet seen). Samples in any order.
 */
export function isOverloaded(samples: LoadSample[], nowMs: number, threshold = OVERLOAD_THRESHOLD, sustainMs = SUSTAIN_MS): { overloaded: boolean; reason: string } {
  const since = nowMs - sustainMs;
  const window = samples.filter((s) => s.atMs >= since && s.atMs <= nowMs);
  const covered = samples.some((s) => s.atMs <= since);
  const pct = (x: number) => `${Math.round(x * 100)}%`;
  if (!covered) return { overloaded: false, reason: `not yet ${sustainMs / 1000} s of samples` };
  if (window.length === 0) return { overloaded: false, reason: `no sample in the last ${sustainMs / 1000} s` };
  const low = Math.min(...window.map((s) => s.load));
  if (low <= threshold) return { overloaded: false, reason: `fell to ${pct(low)} within the last ${sustainMs / 1000} s (threshold ${pct(threshold)})` };
  return { overloaded: true, reason: `above ${pct(threshold)} for ${sustainMs / 1000} s (lowest ${pct(low)})` };
}

/** One VM on the overloaded cloudlet: the load it adds and what moving it would send. */
export interface VmLoad {
  vmId: string;
  /** Its share of the cloudlet's capacity (same unit as LoadSample.load). */
  load: number;
  /** The overlay a handoff would send now: its memory and disk changed against the base. */
  expectedOverlayBytes: number;
}

/**
 * The VMs to move so the cloudlet's load falls to the threshold or below, sending as little as
 * possible: the smallest overlay of those that suffice alone; else the most load per byte first
 * until it suffices (or all are taken, said so).
 */
export function vmsToRelieve(cloudletLoad: number, vms: VmLoad[], threshold = OVERLOAD_THRESHOLD): { vmIds: string[]; loadAfter: number; reason: string } {
  const excess = cloudletLoad - threshold;
  const pct = (x: number) => `${Math.round(x * 100)}%`;
  const mb = (n: number) => `${(n / 1e6).toFixed(1)} MB`;
  if (excess <= 0) return { vmIds: [], loadAfter: cloudletLoad, reason: `load ${pct(cloudletLoad)} is not above ${pct(threshold)}` };
  const alone = vms.filter((v) => v.load >= excess).sort((a, b) => a.expectedOverlayBytes - b.expectedOverlayBytes || a.vmId.localeCompare(b.vmId));
  if (alone.length > 0) {
    const v = alone[0]!;
    return { vmIds: [v.vmId], loadAfter: cloudletLoad - v.load, reason: `${v.vmId} alone takes ${pct(v.load)} off for the smallest overlay of those that suffice (${mb(v.expectedOverlayBytes)})` };
  }
  const perByte = [...vms].filter((v) => v.load > 0).sort((a, b) => b.load / Math.max(1, b.expectedOverlayBytes) - a.load / Math.max(1, a.expectedOverlayBytes) || a.vmId.localeCompare(b.vmId));
  const picked: VmLoad[] = [];
  let after = cloudletLoad;
  for (const v of perByte) {
    if (after <= threshold) break;
    picked.push(v);
    after -= v.load;
  }
  const bytes = picked.reduce((n, v) => n + v.expectedOverlayBytes, 0);
  const enough = after <= threshold;
  return {
    vmIds: picked.map((v) => v.vmId),
    loadAfter: after,
    reason: `no VM suffices alone; ${picked.length} moved, most load per byte first (${mb(bytes)} in all), ${enough ? `load to ${pct(after)}` : `still ${pct(after)}: every VM with load is moved`}`,
  };
}
