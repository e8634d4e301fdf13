import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { DefaultLogger, Runtime, Worker } from '@temporalio/worker';
import { historyFromJSON } from '@temporalio/common/lib/proto-utils.js';
import type { temporal } from '@temporalio/proto';
import { ensureWorkflowBundle } from '../infra/workflow-bundle.js';
import { REPO_ROOT } from '../infra/paths.js';

// The workflow code must replay every history it has written: a change that reorders, adds or
// drops a command would break each run in flight at the upgrade (see docs/workflow-changes.md).
// The histories are real runs, recorded by the end-to-end and fault suites with
// EHOFF_RECORD_HISTORIES=test/histories.

const DIR = join(REPO_ROOT, 'test', 'histories');
// The replay workers' lifecycle lines are noise here; a failing replay is reported by the test.
Runtime.install({ logger: new DefaultLogger('ERROR') });
type History = temporal.api.history.v1.IHistory;

async function recorded(): Promise<Array<{ name: string; history: History }>> {
  const files = (await readdir(DIR)).filter((f) => f.endsWith('.json')).sort();
  return Promise.all(files.map(async (f) => ({ name: f.replace(/\.json$/, ''), history: historyFromJSON(JSON.parse(await readFile(join(DIR, f), 'utf8'))) })));
}

async function replay(histories: Array<{ name: string; history: History }>): Promise<Map<string, string | null>> {
  const bundle = await ensureWorkflowBundle();
  const outcome = new Map<string, string | null>();
  const results = Worker.runReplayHistories(
    { workflowBundle: { codePath: bundle }, replayName: 'ehoff-replay' },
    histories.map((h) => ({ workflowId: h.name, history: h.history })),
  );
  for await (const r of results) outcome.set(r.workflowId, r.error ? `${r.error.name}: ${r.error.message}` : null);
  return outcome;
}

const typeOf = (h: History) => h.events?.[0]?.workflowExecutionStartedEventAttributes?.workflowType?.name;
const signals = (h: History, name: string) => (h.events ?? []).filter((e) => e.workflowExecutionSignaledEventAttributes?.signalName === name).length;
const failureType = (h: History) => h.events?.at(-1)?.workflowExecutionFailedEventAttributes?.failure?.applicationFailureInfo?.type ?? null;
const startInput = (h: History): unknown => {
  const data = h.events?.[0]?.workflowExecutionStartedEventAttributes?.input?.payloads?.[0]?.data;
  return data ? JSON.parse(Buffer.from(data).toString('utf8')) : undefined;
};
const completed = (h: History) => h.events?.at(-1)?.workflowExecutionCompletedEventAttributes != null;

test('the recorded histories cover each path: moved, pinned and adaptive switches, each rollback, events and a drain', async () => {
  const set = await recorded();
  const handoffs = set.filter((s) => typeOf(s.history) === 'handoff');
  const has = (what: string, pred: (h: History) => boolean) => assert.ok(handoffs.some((s) => pred(s.history)), `a recorded handoff that ${what} (${handoffs.map((s) => s.name).join(', ')})`);
  has('moved its VM', completed);
  has('switched mode by its measurements', (h) => signals(h, 'reportMeasurements') > 0);
  has('took pre-copy decisions', (h) => signals(h, 'precopyDecision') > 0);
  has('was pinned to a mode', (h) => typeof (startInput(h) as { pinnedMode?: string } | undefined)?.pinnedMode === 'string');
  for (const type of ['HANDOFF_FAILED', 'HANDOFF_FAILED_AFTER_RESUME']) has(`failed with ${type}`, (h) => failureType(h) === type);
  assert.ok(set.some((s) => typeOf(s.history) === 'drainCloudlet'), 'a drain');
  assert.ok(set.some((s) => typeOf(s.history) === 'handleEvent'), 'an event');
});

test("every recorded history replays on today's workflow code", { timeout: 5 * 60_000 }, async () => {
  const set = await recorded();
  const outcome = await replay(set);
  assert.equal(outcome.size, set.length, 'each history was replayed');
  const failed = [...outcome].filter(([, e]) => e !== null).map(([n, e]) => `${n}: ${e}`);
  assert.deepEqual(failed, [], 'no history fails to replay');
});

test('the replay notices a workflow that would act differently', { timeout: 5 * 60_000 }, async () => {
  // The control: the moved handoff's history with its first activity renamed is not what today's
  // code would schedule, and the replay says so.
  const moved = (await recorded()).find((s) => s.name === 'handoff-moved');
  assert.ok(moved, 'handoff-moved.json is recorded');
  const altered: History = structuredClone(moved.history);
  const scheduled = altered.events!.find((e) => e.activityTaskScheduledEventAttributes)!;
  scheduled.activityTaskScheduledEventAttributes!.activityType = { name: 'somethingElse' };
  const outcome = await replay([{ name: 'altered', history: altered }]);
  assert.match(String(outcome.get('altered')), /DeterminismViolation|[Nn]ondetermin/);
});
