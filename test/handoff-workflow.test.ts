import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { DefaultLogger, Runtime, Worker } from '@temporalio/worker';
import { ApplicationFailure } from '@temporalio/common';
import { WorkflowFailedError } from '@temporalio/client';
import { resolveTemporalCli } from '../infra/temporal-cli.js';
import { ensureWorkflowBundle } from '../infra/workflow-bundle.js';
import { WORKFLOW_TASK_QUEUE, cloudletTaskQueue, type HandoffResult } from '../workflows/definitions.js';
import type { SourceActivities } from '../activities/source-activities.js';
import type { TargetActivities } from '../activities/target-activities.js';

// The orchestration alone, on a real (embedded) Temporal server, with the cloudlets' activities
// replaced by recorders: which steps run where, and what happens when one fails.

let env: TestWorkflowEnvironment;
let bundle: string;

before(async () => {
  Runtime.install({ logger: new DefaultLogger('WARN') });
  env = await TestWorkflowEnvironment.createLocal({
    server: { executable: { type: 'existing-path', path: await resolveTemporalCli() }, log: { level: 'error', format: 'pretty' } },
  });
  bundle = await ensureWorkflowBundle();
});
after(async () => {
  await env?.teardown();
});

type FailAt = 'snapshot' | 'negotiateBaseImage' | 'streamOverlay' | 'finalize' | 'resume' | undefined;

function fakeCloudlet(name: string, calls: string[], failAt: FailAt): SourceActivities & TargetActivities {
  const step = async <T>(activity: string, value: T): Promise<T> => {
    calls.push(`${name}.${activity}`);
    if (activity === failAt) throw ApplicationFailure.nonRetryable(`injected failure in ${activity}`, 'INJECTED');
    return value;
  };
  return {
    snapshot: (a) => step('snapshot', {
      handoffId: a.handoffId, vmId: a.vmId, baseImageId: 'base-0123456789abcdef', pausedAtMs: 1000, heartbeatAtStop: 7,
      memoryDigest: 'm'.repeat(64), memoryPages: 10, diskDigest: 'd'.repeat(64), diskBlocks: 2, deviceStateBytes: 5,
      deviceStateSha256: 's'.repeat(64), captureMs: 1,
    }),
    streamOverlay: () => step('streamOverlay', {
      bytesSent: 12345, ack: { batches: 1, chunks: 12, deviceStateBytes: 5, bytesReceived: 12345 }, streamMs: 3,
      stages: { chunks: 12, zero: 1, baseRefs: 1, selfRefs: 0, data: 10, inputBytes: 49152, rawBytes: 41000, payloadBytes: 9000 },
      modesUsed: { 'xor/zstd-3': 1 },
    }),
    rollback: () => step('rollback', { runState: 'running' }),
    retire: () => step('retire', undefined),
    negotiateBaseImage: () => step('negotiateBaseImage', { host: '127.0.0.1', port: 1, token: 't'.repeat(32) }),
    finalize: (a) => step('finalize', { ...a.expected, verified: true as const, verifyMs: 1, received: { batches: 1, chunks: 12, deviceStateBytes: 5, bytesReceived: 12345 } }),
    resume: () => step('resume', { resumedAtMs: 1400, heartbeatAfter: 8, runState: 'running' }),
    abort: () => step('abort', undefined),
  };
}

type Outcome = { result: HandoffResult | undefined; error: unknown };

async function runWith(failAt: FailAt, input: unknown = { vmId: 'vm-1', source: 'A', target: 'B' }) {
  const calls: string[] = [];
  const workers = await Promise.all([
    Worker.create({ connection: env.nativeConnection, taskQueue: WORKFLOW_TASK_QUEUE, workflowBundle: { codePath: bundle } }),
    Worker.create({ connection: env.nativeConnection, taskQueue: cloudletTaskQueue('A'), activities: fakeCloudlet('A', calls, failAt) }),
    Worker.create({ connection: env.nativeConnection, taskQueue: cloudletTaskQueue('B'), activities: fakeCloudlet('B', calls, failAt) }),
  ]);
  const run = env.client.workflow
    .execute('handoff', { taskQueue: WORKFLOW_TASK_QUEUE, workflowId: `wf-test-${Math.random()}`, args: [input] })
    .then(
      (r): Outcome => ({ result: r as HandoffResult, error: undefined }),
      (error: unknown): Outcome => ({ result: undefined, error }),
    );
  // Each worker runs until the workflow has ended.
  const [outcome] = await Promise.all([run, ...workers.map((w) => w.runUntil(run))]);
  return { ...outcome, calls };
}

test('the five steps run in order, each on the cloudlet that owns it, then the source retires', async () => {
  const { result, calls } = await runWith(undefined);
  assert.deepEqual(calls, ['A.snapshot', 'B.negotiateBaseImage', 'A.streamOverlay', 'B.finalize', 'B.resume', 'A.retire']);
  assert.ok(result);
  assert.equal(result.downtimeMs, 400);
  assert.equal(result.verified, true);
  assert.equal(result.guestContinued, true);
  assert.deepEqual(result.steps.map((s) => s.step), ['snapshot', 'negotiate', 'stream', 'finalize', 'resume', 'retire-source', 'done']);
});

for (const failAt of ['negotiateBaseImage', 'streamOverlay', 'finalize', 'resume'] as const) {
  test(`a failure in ${failAt} aborts the target and puts the VM back to running at the source`, async () => {
    const { error, calls } = await runWith(failAt);
    assert.ok(error instanceof WorkflowFailedError, 'the workflow fails');
    assert.match(String((error.cause as Error).message), new RegExp(`injected failure in ${failAt}.*runs on at A`));
    assert.deepEqual(calls.slice(-2), ['B.abort', 'A.rollback']);
    assert.ok(!calls.includes('A.retire'), 'the source copy is never retired');
  });
}

test('a failed snapshot rolls back the source without touching the target', async () => {
  const { error, calls } = await runWith('snapshot');
  assert.ok(error instanceof WorkflowFailedError);
  assert.deepEqual(calls, ['A.snapshot', 'A.rollback']);
});

test('malformed input fails the workflow before any activity, naming the field', async () => {
  const { error, calls } = await runWith(undefined, { vmId: 'Bad VM!', source: 'A', target: 'B' });
  assert.ok(error instanceof WorkflowFailedError);
  assert.match(String((error.cause as Error).message), /malformed handoff request: 'vmId'/);
  assert.deepEqual(calls, []);
  const same = await runWith(undefined, { vmId: 'vm-1', source: 'A', target: 'A' });
  assert.match(String((same.error as WorkflowFailedError).cause?.message), /'target': source and target must be different/);
});
