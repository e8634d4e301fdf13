import { test } from 'node:test';
import assert from 'node:assert/strict';
import { linkProfile, parseProfileNames } from '../bench/adaptation/link-profiles.js';
import { mergeReports } from '../bench/adaptation/merge-reports.js';
import { adaptationReportSchema, type AdaptationReport } from '../bench/adaptation/report.js';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { REPO_ROOT } from '../infra/paths.js';
import { ADAPTIVE, markdownTable, median, policyCells, summarize, type AdaptationRun } from '../bench/adaptation/summary.js';

test('the profiles: step falls once, square alternates, hog arrives once, constant and slow never change', () => {
  const timing = { stepAtSeconds: 10, hogAtSeconds: 20, squarePeriodSeconds: 15 };
  const step = linkProfile('step', timing);
  assert.deepEqual([step.at(0), step.at(9.9), step.at(10), step.at(500)], [{ mbps: 25, hog: false }, { mbps: 25, hog: false }, { mbps: 5, hog: false }, { mbps: 5, hog: false }]);
  assert.deepEqual(step.changes(900), [10]);
  assert.deepEqual(step.changes(5), []);
  const square = linkProfile('square', timing);
  assert.deepEqual([0, 14, 15, 29, 30, 45].map((s) => square.at(s).mbps), [20, 20, 8, 8, 20, 8]);
  assert.deepEqual(square.changes(60), [15, 30, 45, 60]);
  const hog = linkProfile('hog', timing);
  assert.deepEqual([hog.at(19), hog.at(20)], [{ mbps: 10, hog: false }, { mbps: 10, hog: true }]);
  assert.deepEqual(linkProfile('constant', timing).changes(900), []);
  assert.deepEqual([linkProfile('slow', timing).at(0), linkProfile('slow', timing).changes(900)], [{ mbps: 5, hog: false }, []]);
  assert.throws(() => parseProfileNames('step,ramp'), /unknown profile 'ramp'/);
  assert.throws(() => parseProfileNames(' , '), /empty/);
});

const run = (policy: string, n: number, totalSeconds: number, extra: Partial<AdaptationRun> = {}): AdaptationRun => ({
  profile: 'step', policy, run: n, totalSeconds, downtimeSeconds: 0.5, wireBytes: 50e6, cpuSeconds: 30, completed: true, converged: true, modeSwitches: [], ...extra,
});

test('the summary: medians of completed runs, the best static in hindsight, the average of static medians', () => {
  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([4, 1, 2, 3]), 2.5);
  assert.equal(median([]), null);
  const runs = [
    run(ADAPTIVE, 1, 50, { downtimeSeconds: 0.4 }), run(ADAPTIVE, 2, 54, { downtimeSeconds: 0.8 }), run(ADAPTIVE, 3, 70, { downtimeSeconds: 0.6 }),
    run('none/zstd-3', 1, 48), run('none/zstd-3', 2, 52), run('none/zstd-3', 3, 200, { completed: false }),
    run('none/xz-1', 1, 80), run('none/xz-1', 2, 90), run('none/xz-1', 3, 70),
    // A mode that never completed counts in neither the best nor the average.
    run('none/zstd-1', 1, 10, { completed: false }),
  ];
  const [s] = summarize(runs);
  assert.equal(s!.adaptiveSeconds, 54);
  assert.equal(s!.adaptiveDowntimeSeconds, 0.6);
  assert.equal(s!.bestStaticMode, 'none/zstd-3');
  assert.equal(s!.bestStaticSeconds, 50);
  assert.equal(s!.averageStaticSeconds, 65);
  assert.equal(s!.adaptiveOverBest, 54 / 50);
  assert.equal(s!.adaptiveBelowAverage, true);
  const zstd1 = policyCells(runs).find((c) => c.policy === 'none/zstd-1')!;
  assert.deepEqual([zstd1.runs, zstd1.completed, zstd1.medianSeconds], [1, 0, null]);
  const table = markdownTable(runs);
  assert.match(table, /\| step \| \*\*adaptive\*\* \| 54\.0 \| 50\.0–70\.0 \| 1\.08 \|/);
  assert.match(table, /\| step \| none\/zstd-1 \| — \|.*\| 0\/1 \|/);
});

test('a profile whose adaptive runs all failed has no adaptive figures', () => {
  const [s] = summarize([run(ADAPTIVE, 1, 30, { completed: false }), run('none/zstd-3', 1, 40)]);
  assert.deepEqual([s!.adaptiveSeconds, s!.adaptiveOverBest, s!.adaptiveBelowAverage, s!.bestStaticSeconds], [null, null, null, 40]);
});

test('reports merge by cell: a (profile, policy) run again replaces its earlier runs; another testbed or an unfinished run is refused', () => {
  const testbed = { guest: { memoryMiB: 1024, workload: { name: 'kvstore', args: ['256', '200', '50'] } }, rttMs: 50, warmupSeconds: 20, timing: { stepAtSeconds: 10, hogAtSeconds: 20, squarePeriodSeconds: 15 } };
  const report = (commit: string, runs: AdaptationRun[]): AdaptationReport => ({
    ...testbed, generatedAt: commit, commit, finished: true, staticModes: [], runs,
    profiles: [...new Set(runs.map((r) => r.profile))].map((name) => ({ name, description: name })),
    details: runs.map((r) => ({ profile: r.profile, policy: r.policy, run: r.run, from: commit })),
  });
  const a = report('a', [run(ADAPTIVE, 1, 50), run('none/zstd-9', 1, 48), { ...run(ADAPTIVE, 1, 40), profile: 'square' }]);
  const b = report('b', [run(ADAPTIVE, 1, 45)]); // the adaptive policy alone, under step, again
  const m = mergeReports([{ file: 'a.json', report: a }, { file: 'b.json', report: b }]);
  assert.deepEqual(m.runs.map((r) => [r.profile, r.policy, r.totalSeconds]), [['step', 'none/zstd-9', 48], ['square', ADAPTIVE, 40], ['step', ADAPTIVE, 45]]);
  assert.deepEqual(m.details.map((d) => [d.profile, d.policy, d.from]), [['step', 'none/zstd-9', 'a'], ['square', ADAPTIVE, 'a'], ['step', ADAPTIVE, 'b']]);
  assert.deepEqual(m.staticModes, ['none/zstd-9']);
  assert.deepEqual(m.profiles.map((p) => p.name).sort(), ['square', 'step']);
  assert.deepEqual(m.sources.map((s) => [s.commit, s.profiles]), [['a', ['step', 'square']], ['b', ['step']]]);
  assert.throws(() => mergeReports([{ file: 'a.json', report: a }, { file: 'c.json', report: { ...b, rttMs: 100 } }]), /c\.json ran on another testbed than a\.json/);
  assert.throws(() => mergeReports([{ file: 'a.json', report: a }, { file: 'd.json', report: { ...b, finished: false } }]), /d\.json is from a benchmark that had not finished/);
});

test('a report the benchmark wrote reads back through the merge\'s schema', async () => {
  const path = join(REPO_ROOT, 'docs', 'bench', 'adaptation-bench-check.json');
  const parsed = adaptationReportSchema.parse(JSON.parse(await readFile(path, 'utf8')));
  assert.ok(parsed.runs.length >= 8 && parsed.runs.every((r) => r.totalSeconds > 0), `${parsed.runs.length} runs`);
  assert.deepEqual([...new Set(parsed.runs.map((r) => r.profile))], ['step', 'square', 'hog', 'constant']);
});
