import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runFuzz } from './fuzz/fuzz-run.js';
import { formatFailure, replayCommand, summaryLine } from './fuzz/report.js';
import { DEFAULT_SETTINGS, type FuzzSettings } from './fuzz/settings.js';

// The data plane's receiving side under a short fuzz run (issue 11): random bytes, mutated valid
// streams in random reads and mutated batches, in memory and over TLS into a live server. No
// crash, no hang, nothing out of range, memory bounded. The long run is `npm run fuzz`.

const SHORT: FuzzSettings = {
  ...DEFAULT_SETTINGS,
  // Fixed, so that a failure here replays as the line it prints says.
  seed: 20_241_111,
  cases: 2_000,
  // 250 over TLS: a handshake each, the bulk of the run's time.
  socketEvery: 8,
  livenessEvery: 100,
  // A receiver that fails one way fails it many times, each costing up to the case's bound.
  maxFailures: 5,
};

test('a short fuzz run: every case survived, nothing out of range, memory under its bound', { timeout: 240_000 }, async () => {
  const summary = await runFuzz(SHORT);
  const report = summary.failures.map((f) => formatFailure(f, replayCommand(SHORT.seed, SHORT.socketEvery, f.index))).join('\n');
  assert.equal(summary.failures.length, 0, `${summaryLine(summary)}\n${report}`);
  assert.equal(summary.cases, SHORT.cases);
  assert.ok(summary.byKind.socket >= 200 && summary.livenessChecks >= 2, `socket cases ran: ${summaryLine(summary)}`);
  assert.ok(summary.peakRssBytes <= SHORT.rssBoundBytes, summaryLine(summary));
});
