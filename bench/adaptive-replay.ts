import { chooseMode } from '../engine/adaptation/choose-mode.js';
import type { ModeMeasurement } from '../engine/adaptation/measurements.js';
import { DEFAULT_MODE, modeId, type ModeId } from '../engine/adaptation/mode.js';

/** A mode's measured processing throughput (input MB/s on the pool) and ratio, per phase. */
export interface ModeProfile {
  mode: ModeId;
  P_MBps: [number, number];
  ratio: [number, number];
}

export interface ReplayLink {
  /** Input MB to move; the link changes rate when half of it has gone. */
  inputMB: number;
  mbpsBefore: number;
  mbpsAfter: number;
}

export interface ReplayPolicy {
  decideEverySeconds: number;
  sampleEverySeconds: number;
  modesPerSample: number;
  sampleMB: number;
  /** How long the stream takes to see a change of R in its acknowledgements. */
  rLagSeconds: number;
}

const phase = (sentMB: number, link: ReplayLink) => (sentMB < link.inputMB / 2 ? 0 : 1);
const rate = (p: ModeProfile, ph: 0 | 1, mbps: number) => Math.min(p.P_MBps[ph], mbps / 8 / p.ratio[ph]);

/** Seconds a fixed mode takes over the link. */
export function staticSeconds(p: ModeProfile, link: ReplayLink): number {
  const half = link.inputMB / 2;
  return half / rate(p, 0, link.mbpsBefore) + half / rate(p, 1, link.mbpsAfter);
}

/**
 * Replays the adaptive policy — the same `chooseMode` the workflow runs — over measured mode
 * profiles: it starts in the default mode knowing nothing else, learns other modes a few at a
 * time from samples (whose CPU it pays for), sees R only through its acknowledgements (with a
 * lag), and decides every few seconds.
 */
export function adaptiveSeconds(profiles: ModeProfile[], link: ReplayLink, policy: ReplayPolicy): { seconds: number; switches: Array<{ t: number; to: ModeId }> } {
  const byMode = new Map(profiles.map((p) => [p.mode, p]));
  let mode = modeId(DEFAULT_MODE);
  const known = new Set<ModeId>([mode]);
  const others = profiles.map((p) => p.mode).filter((m) => m !== mode);
  let cursor = 0;
  const dt = 0.05;
  let t = 0;
  let sent = 0;
  let nextDecision = policy.decideEverySeconds;
  let nextSample = policy.sampleEverySeconds;
  let samplingDebt = 0; // pool-seconds owed to sampling
  const history: Array<{ t: number; mbps: number }> = [];
  const switches: Array<{ t: number; to: ModeId }> = [];
  while (sent < link.inputMB) {
    const ph = phase(sent, link);
    const mbps = ph === 0 ? link.mbpsBefore : link.mbpsAfter;
    history.push({ t, mbps });
    const p = byMode.get(mode)!;
    // Sampling competes with the stream for the pool.
    const cpuShare = samplingDebt > 0 ? 0.5 : 0;
    const cpuBound = p.P_MBps[ph] <= mbps / 8 / p.ratio[ph];
    const moved = rate(p, ph, mbps) * (cpuBound ? 1 - cpuShare : 1) * dt;
    samplingDebt = Math.max(0, samplingDebt - dt * (cpuBound ? cpuShare : 1));
    sent += moved;
    t += dt;
    if (t >= nextSample) {
      nextSample += policy.sampleEverySeconds;
      for (let k = 0; k < policy.modesPerSample && others.length; k++) {
        const m = others[cursor++ % others.length]!;
        known.add(m);
        samplingDebt += policy.sampleMB / byMode.get(m)!.P_MBps[phase(sent, link)];
      }
    }
    if (t >= nextDecision) {
      nextDecision += policy.decideEverySeconds;
      const seen = history.filter((h) => h.t <= t - policy.rLagSeconds).at(-1) ?? history[0]!;
      const phNow = phase(sent, link);
      const modes: ModeMeasurement[] = [...known].map((m) => {
        const q = byMode.get(m)!;
        return { mode: m, P_MBps: q.P_MBps[phNow], ratio: q.ratio[phNow], from: 'sample', bytes: 1 };
      });
      const d = chooseMode({ atMs: t * 1000, mode, R_Mbps: seen.mbps, threads: 2, inputBytes: 0, wireBytes: 0, modes }, { pinnedMode: null, bandwidthCapMbps: null }, mode);
      if (d.mode !== mode) {
        mode = d.mode;
        switches.push({ t, to: mode });
      }
    }
  }
  return { seconds: t, switches };
}
