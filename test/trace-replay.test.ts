import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { REPO_ROOT } from '../infra/paths.js';
import { chooseMode } from '../engine/adaptation/choose-mode.js';
import { linkAt, modeAt, policySeconds, regretOf, staticSeconds } from '../engine/adaptation/trace-replay.js';
import { parseStreamTrace, tracedControl, type StreamTrace } from '../engine/adaptation/stream-trace.js';
import { fixedControl } from '../engine/handoff/stream-control.js';
import type { StreamMeasurements } from '../engine/adaptation/measurements.js';

// Mode policies replayed over a recorded stream's conditions, without a VM: each static mode and
// the adaptive policy move the same input, and the regret is the policy's time over the best
// static mode's in hindsight.

const FAST = 'none/zstd-1';
const TIGHT = 'none/xz-1';

/** 120 MB of input; the link falls from 40 to 4 Mbit/s at 10 s. FAST: 10 MB/s, ratio 0.5. TIGHT: 2 MB/s, ratio 0.1. */
function stepTrace(): StreamTrace {
  const ticks: StreamMeasurements[] = [];
  for (let s = 1; s <= 40; s++) {
    ticks.push({
      atMs: s * 1_000,
      mode: FAST,
      R_Mbps: s <= 10 ? 40 : 4,
      threads: 2,
      inputBytes: Math.min(120e6, s * 3e6),
      wireBytes: 0,
      modes: [
        { mode: FAST, P_MBps: 10, ratio: 0.5, from: 'stream', bytes: 1e6 },
        ...(s >= 3 ? [{ mode: TIGHT, P_MBps: 2, ratio: 0.1, from: 'sample' as const, bytes: 262_144 }] : []),
      ],
    });
  }
  return { version: 1, handoffId: 'h-step', attempt: 1, startedAt: '2026-12-03T00:00:00Z', ticks, decisions: [] };
}

const adaptive = (m: StreamMeasurements, current: string, heldMs: number) => chooseMode(m, { pinnedMode: null, bandwidthCapMbps: null }, current, heldMs).mode;

test('what a mode and the link did at a moment: the latest figures then, else the first after', () => {
  const t = stepTrace();
  assert.deepEqual(modeAt(t, TIGHT, 1_000), { P_MBps: 2, ratio: 0.1 }, 'before its first sample, the first one counts');
  assert.equal(modeAt(t, 'xor/zstd-9', 5_000), null, 'never measured');
  assert.equal(linkAt(t, 5_000), 40);
  assert.equal(linkAt(t, 12_500), 4);
});

test('each static mode, and the adaptive policy, over a link that falls', () => {
  const t = stepTrace();
  // FAST: 100 MB in the first 10 s at 10 MB/s, then 20 MB at min(10, 0.5/0.5) = 1 MB/s.
  assert.ok(Math.abs(staticSeconds(t, FAST) - 30) < 1e-9, `${staticSeconds(t, FAST)}`);
  assert.ok(Math.abs(staticSeconds(t, TIGHT) - 60) < 1e-9, 'TIGHT: 2 MB/s throughout');
  const p = policySeconds(t, adaptive);
  assert.deepEqual(p.switches.map((s) => s.to), [TIGHT], 'one switch, when the link fell');
  assert.ok(p.seconds < 22, `FAST while the link was fast, then TIGHT: ${p.seconds} s`);
  const r = regretOf(t, adaptive);
  assert.equal(r.statics[0]!.mode, FAST);
  assert.ok(r.regret < 0.75, `the policy beats the best static mode in hindsight here: ${r.regret}`);
  assert.equal(r.inputMB, 120);
});

test('a pinned policy replays as its static mode', () => {
  const t = stepTrace();
  assert.equal(policySeconds(t, () => FAST).seconds, staticSeconds(t, FAST));
});

test('a traced control keeps every report and decision and passes them on', () => {
  const seen: number[] = [];
  const { control, trace } = tracedControl(fixedControl(FAST, null, (m) => seen.push(m.atMs)), 'h-1', 2);
  const tick = stepTrace().ticks[0]!;
  control.report(tick);
  control.decided?.({ epoch: 0, action: 'continue', reason: 'r', pendingChunks: 1, estimateMs: 1, budgetMs: 300, R_Mbps: 10, ratio: 0.5, dirtyBytesPerS: null, guestPausedShare: 0, atMs: 1 });
  assert.deepEqual(seen, [1_000]);
  const back = parseStreamTrace(JSON.stringify(trace()), 'h-1.json');
  assert.equal(back.ticks.length, 1);
  assert.equal(back.decisions[0]!.action, 'continue');
  assert.equal(back.attempt, 2);
});

test('a file that is not a trace is refused, naming what is wrong', () => {
  const t = stepTrace();
  assert.throws(() => parseStreamTrace(JSON.stringify({ ...t, ticks: [] }), 'empty.json'), /empty\.json: not a stream trace: ticks: a trace needs at least one tick/);
  const badMode = structuredClone(t);
  badMode.ticks[0]!.mode = 'none/zstd-99';
  assert.throws(() => parseStreamTrace(JSON.stringify(badMode), 'bad.json'), /bad\.json: not a stream trace: ticks\.0\.mode/);
});

// Real traces, recorded with EHOFF_TRACE_DIR from `npm run bench:handoff -- --quick --systems
// handoff --workloads kvstore,imageproc --mbps 5` (1 GiB guests on the 5 Mbit/s testbed) and from
// e2e-wan (10 Mbit/s). The adaptive policy's regret on each, as measured when they were recorded:
// a change to the policy that makes any of them worse by more than 5% fails here; one that makes
// them better moves these figures down. imageproc's 2.26: the policy starts in none/zstd-3, keeps
// each mode 5 s and learns the xor modes from samples, while xor/xz-1 alone would be fastest.
const REAL_TRACES: Record<string, number> = {
  'kvstore-1gib-5mbps.json': 1.0,
  'imageproc-1gib-5mbps.json': 2.259,
  'e2e-wan-10mbps.json': 1.0,
};

test('the adaptive policy on real traces: no worse than when they were recorded', async () => {
  for (const [file, recorded] of Object.entries(REAL_TRACES)) {
    const path = join(REPO_ROOT, 'test', 'traces', file);
    const trace = parseStreamTrace(await readFile(path, 'utf8'), path);
    const r = regretOf(trace, adaptive);
    assert.ok(r.statics.length >= 5, `${file}: several modes measured (${r.statics.length})`);
    assert.ok(r.regret <= recorded * 1.05, `${file}: regret ${r.regret.toFixed(3)} against ${recorded} when recorded (best static ${r.statics[0]!.mode} ${r.statics[0]!.seconds.toFixed(1)} s, adaptive ${r.policy.seconds.toFixed(1)} s)`);
  }
});
