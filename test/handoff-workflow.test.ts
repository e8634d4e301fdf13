import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { DefaultLogger, Runtime, Worker } from '@temporalio/worker';
import { ApplicationFailure } from '@temporalio/common';
import { WorkflowFailedError } from '@temporalio/client';
import { resolveTemporalCli } from '../infra/temporal-cli.js';
import { ensureWorkflowBundle } from '../infra/workflow-bundle.js';
import {
  WORKFLOW_TASK_QUEUE,
  cloudletTaskQueue,
  pinModeSignal,
  reportMeasurementsSignal,
  streamControlQuery,
  type HandoffResult,
} from '../workflows/definitions.js';
import { Context } from '@temporalio/activity';
import { setTimeout as sleep } from 'node:timers/promises';
import type { CloudletActivities } from '../activities/cloudlet-activities.js';
import type { SourceActivities } from '../activities/source-activities.js';
import type { TargetActivities } from '../activities/target-activities.js';
import { decideSourceRecovery } from '../engine/handoff/source-phase.js';

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

/**
 * Where to inject a failure. 'digests': the target reports digests other than the source's;
 * 'streamAfterEnd': the source's stream fails after the target got the overlay's end.
 */
type FailAt = 'snapshot' | 'negotiateBaseImage' | 'streamOverlay' | 'streamAfterEnd' | 'silentTarget' | 'finish' | 'retire' | 'digests' | undefined;

type StreamBehaviour = () => Promise<Record<string, number>>;

/** The stream's end, seen by the target's finalize (which waits for it, as the real one does). */
function streamEnd() {
  let settle!: { resolve: () => void; reject: (e: Error) => void };
  const ended = new Promise<void>((resolve, reject) => (settle = { resolve, reject }));
  ended.catch(() => undefined);
  return { ended, ...settle };
}

function fakeCloudlet(name: string, calls: string[], failAt: FailAt, end: ReturnType<typeof streamEnd>, stream?: StreamBehaviour): SourceActivities & TargetActivities & Pick<CloudletActivities, 'describeVm' | 'holdsBaseImage'> {
  /** The target has continued the VM (what its abort then answers). */
  let resumedHere = false;
  /** The source's end frame has left (its persisted phase: what its rollback decides from). */
  let endSent = false;
  /** 'silentTarget': the target's first answers to abort are lost. */
  let abortsUnanswered = failAt === 'silentTarget' ? 4 : 0;
  const finalized = () => ({ memoryDigest: (failAt === 'digests' ? 'x' : 'm').repeat(64), diskDigest: 'd'.repeat(64), verified: true as const, verifyMs: 1, received: { batches: 1, chunks: 12, deviceStateBytes: 5, bytesReceived: 12345 }, marks: { receivedAtMs: 1190, finalizeStartedAtMs: 1270, verifiedAtMs: 1300 } });
  const resumed = { resumedAtMs: 1400, resumeStartedAtMs: 1350, heartbeatAfter: 8, firstHeartbeatAtMs: 1500, runState: 'running' };
  const step = async <T>(activity: string, value: T): Promise<T> => {
    calls.push(`${name}.${activity}`);
    if (activity === failAt) throw ApplicationFailure.nonRetryable(`injected failure in ${activity}`, 'INJECTED');
    return value;
  };
  return {
    // Both cloudlets hold the base: no fetch (see base-transfer.test.ts for one that travels).
    describeVm: async (a) => ({ vmId: a.vmId, cloudlet: name, baseImageId: 'base-0123456789abcdef', runState: 'running', lostReason: null, lastHeartbeat: 3, dirtyDiskBlocks: 0 }),
    holdsBaseImage: async () => true,
    snapshot: (a) => step('snapshot', { handoffId: a.handoffId, vmId: a.vmId, baseImageId: 'base-0123456789abcdef', heartbeatAtStart: 3 }),
    streamOverlay: async () => stepThenEnd(step('streamOverlay', {
      bytesSent: 12345, ack: { batches: 1, chunks: 12, deviceStateBytes: 5, bytesReceived: 12345 }, streamMs: 3,
      stages: { chunks: 12, zero: 1, baseRefs: 1, selfRefs: 0, data: 10, againstPrevious: 0, inputBytes: 49152, rawBytes: 41000, payloadBytes: 9000 },
      modesUsed: stream ? await stream() : { 'xor/zstd-3': 1 },
      epochs: [{ epoch: 0, live: true, memoryPages: 10, diskBlocks: 2, resentMemoryPages: 0, resentDiskBlocks: 0, ms: 5 }, { epoch: 1, live: false, memoryPages: 1, diskBlocks: 0, resentMemoryPages: 1, resentDiskBlocks: 0, ms: 1 }],
      stopReason: 'converged', converged: true, guestSlowdown: [], pausedAtMs: 1000, heartbeatAtStop: 7, lastHeartbeatAtMs: 990, liveMaxGapMs: 120,
      memoryDigest: 'm'.repeat(64), diskDigest: 'd'.repeat(64), deviceStateBytes: 5, reconciled: null,
      stopMarks: { pausedAtMs: 1000, scannedAtMs: 1050, finalEpochEncodedAtMs: 1060, deviceStateSavedAtMs: 1080, ackedAtMs: 1200, digestedAtMs: 1250 },
      memoryTracking: { kind: 'dirty-log' }, postCopy: null,
    })),
    // The real decision, on the phase this fake source is in.
    rollback: (a) => {
      const d = decideSourceRecovery({ handoffId: a.handoffId, vmId: a.vmId, phase: endSent ? 'commit-sent' : 'live', attempt: 1, at: '' }, a.target);
      calls.push(`A.rollback(${a.target}) → ${d.action}`);
      return step('rollback', { runState: d.action === 'resume-here' ? 'running' : 'paused', action: d.action, reason: d.reason });
    },
    retire: () => step('retire', undefined),
    negotiateBaseImage: () => step('negotiateBaseImage', { host: '127.0.0.1', port: 1, cloudlet: 'B' }),
    // Checks against what the source sent in-band (here: the same fixed digests) once the stream
    // has ended, then continues the VM; a refusal leaves nothing behind, as the real one.
    finish: async () => {
      await end.ended;
      const value = await step('finish', { finalized: finalized(), resumed, postCopy: null });
      resumedHere = true;
      return value;
    },
    // The steps of workflows started before 'resume-at-finalize'.
    finalize: async () => {
      await end.ended;
      return step('finalize', finalized());
    },
    resume: () => step('resume', resumed),
    abort: async () => {
      if (abortsUnanswered > 0) {
        abortsUnanswered--;
        calls.push('B.abort unanswered');
        throw new Error('the target does not answer');
      }
      end.reject(new Error('aborted'));
      return step('abort', { resumed: resumedHere });
    },
  };
  async function stepThenEnd<T>(running: Promise<T>): Promise<T> {
    try {
      const value = await running;
      endSent = true;
      if (failAt === 'silentTarget') throw ApplicationFailure.nonRetryable('injected failure after the end frame left', 'INJECTED');
      end.resolve();
      if (failAt === 'streamAfterEnd') {
        await sleep(200); // the target has the overlay's end and resumes; the source's report is lost
        throw ApplicationFailure.nonRetryable('injected failure after the overlay\'s end', 'INJECTED');
      }
      return value;
    } catch (err) {
      end.reject(err as Error);
      throw err;
    }
  }
}

type Outcome = { result: HandoffResult | undefined; error: unknown };

async function runWith(failAt: FailAt, input: unknown = { vmId: 'vm-1', source: 'A', target: 'B' }, stream?: StreamBehaviour, workflowId = `wf-test-${Math.random()}`) {
  const calls: string[] = [];
  const end = streamEnd();
  const workers = await Promise.all([
    Worker.create({ connection: env.nativeConnection, taskQueue: WORKFLOW_TASK_QUEUE, workflowBundle: { codePath: bundle } }),
    Worker.create({ connection: env.nativeConnection, taskQueue: cloudletTaskQueue('A'), activities: fakeCloudlet('A', calls, failAt, end, stream) }),
    Worker.create({ connection: env.nativeConnection, taskQueue: cloudletTaskQueue('B'), activities: fakeCloudlet('B', calls, failAt, end) }),
  ]);
  const run = env.client.workflow
    .execute('handoff', { taskQueue: WORKFLOW_TASK_QUEUE, workflowId, args: [input] })
    .then(
      (r): Outcome => ({ result: r as HandoffResult, error: undefined }),
      (error: unknown): Outcome => ({ result: undefined, error }),
    );
  // Each worker runs until the workflow has ended.
  const [outcome] = await Promise.all([run, ...workers.map((w) => w.runUntil(run))]);
  return { ...outcome, calls };
}

test('the steps run in order, each on the cloudlet that owns it, then the source retires', async () => {
  const { result, calls } = await runWith(undefined);
  assert.deepEqual(calls, ['A.snapshot', 'B.negotiateBaseImage', 'A.streamOverlay', 'B.finish', 'A.retire']);
  assert.ok(result);
  assert.equal(result.downtimeMs, 400);
  assert.equal(result.guestGapMs, 510, 'guest gap: last heartbeat at the source (990) to the first at the target (1500)');
  assert.deepEqual(
    result.guestGapParts,
    { liveMs: 120, acrossStopMs: 510, beforePauseMs: 10, afterResumeMs: 100 },
    'and its parts: the live phase\'s longest silence; across the stop, split as 10 ms before the pause + 400 ms downtime + 100 ms after cont',
  );
  assert.equal(result.verified, true);
  assert.equal(result.guestContinued, true);
  assert.deepEqual(result.steps.map((s) => s.step), ['snapshot', 'negotiate', 'stream', 'finalize', 'resume', 'retire-source', 'done']);
});

for (const failAt of ['negotiateBaseImage', 'streamOverlay', 'finish'] as const) {
  test(`a failure in ${failAt} aborts the target and puts the VM back to running at the source`, async () => {
    const { error, calls } = await runWith(failAt);
    assert.ok(error instanceof WorkflowFailedError, 'the workflow fails');
    assert.match(String((error.cause as Error).message), new RegExp(`injected failure in ${failAt}.*runs on at A`));
    assert.deepEqual(calls.slice(-3), ['B.abort', 'A.rollback(released) → resume-here', 'A.rollback']);
    assert.ok(!calls.includes('A.retire'), 'the source copy is never retired');
  });
}

test('once the target has resumed the VM, no failure resumes the source: it is left stopped, or retired', async () => {
  // The two reports disagree after the target resumed on what it verified: the move stands, and
  // it is not called clean.
  const differ = await runWith('digests');
  assert.ok(differ.error instanceof WorkflowFailedError);
  // The target answered that it continued the VM: the source's stopped copy is retired.
  assert.match(String((differ.error.cause as Error).message), /failed at step 'resume' after B had resumed it: the target verified digests that differ from the source's report\. The VM runs at B; its copy at A was retired/);
  assert.equal((differ.error.cause as ApplicationFailure).type, 'HANDOFF_FAILED_AFTER_RESUME');
  assert.deepEqual(differ.calls.slice(-3), ['B.finish', 'B.abort', 'A.retire']);
  assert.ok(!differ.calls.includes('A.rollback'), 'the source copy is not resumed');

  const retire = await runWith('retire');
  // A retire that fails again is left to an operator: the copy stays stopped, and the message says so.
  assert.match(String((retire.error as WorkflowFailedError).cause?.message), /failed at step 'retire-source' after B had resumed it.*runs at B; its copy at A was left stopped/);
  assert.deepEqual(retire.calls.slice(-4), ['B.finish', 'A.retire', 'B.abort', 'A.retire']);

  // The source loses its stream after the target got the overlay's end: the target resumed, so
  // the handoff stands, the source is retired, and the run says the report is missing.
  const lost = await runWith('streamAfterEnd');
  assert.equal((lost.error as WorkflowFailedError).cause instanceof ApplicationFailure && ((lost.error as WorkflowFailedError).cause as ApplicationFailure).type, 'HANDOFF_UNREPORTED');
  assert.match(String((lost.error as WorkflowFailedError).cause?.message), /moved from A to B: verified, resumed and going on there, its copy at A retired; .*injected failure after the overlay's end/);
  assert.deepEqual(lost.calls, ['A.snapshot', 'B.negotiateBaseImage', 'A.streamOverlay', 'B.finish', 'B.abort', 'A.retire']);
});

test('a stream that fails before the target resumed releases the target once and resumes the source', async () => {
  const { calls } = await runWith('streamOverlay');
  assert.deepEqual(calls, ['A.snapshot', 'B.negotiateBaseImage', 'A.streamOverlay', 'B.abort', 'A.rollback(released) → resume-here', 'A.rollback']);
});

test('after the end frame left, a target that does not answer keeps the source stopped; the workflow asks until it does', async () => {
  const { error, calls } = await runWith('silentTarget');
  assert.ok(error instanceof WorkflowFailedError);
  assert.equal((error.cause as ApplicationFailure).type, 'HANDOFF_FAILED');
  assert.match(String((error.cause as Error).message), /runs on at A/);
  // The stream's own abort tries three times; then the rollback asks once, is not answered, and
  // the source, whose end frame left, stays stopped; asked again, the target answers and lets go.
  assert.deepEqual(calls.slice(3), [
    'B.abort unanswered', 'B.abort unanswered', 'B.abort unanswered',
    'B.abort unanswered', 'A.rollback(no-answer) → wait-for-target', 'A.rollback',
    'B.abort', 'A.rollback(released) → resume-here', 'A.rollback',
  ]);
});

test('a failed snapshot rolls back the source without touching the target', async () => {
  const { error, calls } = await runWith('snapshot');
  assert.ok(error instanceof WorkflowFailedError);
  assert.deepEqual(calls, ['A.snapshot', 'A.rollback(released) → resume-here', 'A.rollback']);
});

test('malformed input fails the workflow before any activity, naming the field', async () => {
  const { error, calls } = await runWith(undefined, { vmId: 'Bad VM!', source: 'A', target: 'B' });
  assert.ok(error instanceof WorkflowFailedError);
  assert.match(String((error.cause as Error).message), /malformed handoff request: 'vmId'/);
  assert.deepEqual(calls, []);
  const same = await runWith(undefined, { vmId: 'vm-1', source: 'A', target: 'A' });
  assert.match(String((same.error as WorkflowFailedError).cause?.message), /'target': source and target must be different/);
});

test('the stream switches mode on signalled measurements and on an operator pin; the history shows both', async () => {
  const workflowId = `wf-adapt-${Date.now()}`;
  const until = async (want: string) => {
    const handle = env.client.workflow.getHandle(workflowId);
    for (let i = 0; i < 100; i++) {
      if ((await handle.query(streamControlQuery)).mode === want) return;
      await sleep(100);
    }
    throw new Error(`mode never became ${want}`);
  };
  // The streaming activity, as the real one does: report measurements, follow the decided mode.
  const stream: StreamBehaviour = async () => {
    const handle = Context.current().client.workflow.getHandle(workflowId);
    assert.equal((await handle.query(streamControlQuery)).mode, 'none/zstd-3', 'the stream starts in the default mode');
    await handle.signal(reportMeasurementsSignal, {
      atMs: 2000, mode: 'none/zstd-3', R_Mbps: 2, threads: 2, inputBytes: 8 << 20, wireBytes: 3 << 20,
      modes: [
        { mode: 'none/zstd-3', P_MBps: 200, ratio: 0.33, from: 'stream', bytes: 8 << 20 },
        { mode: 'xor/xz-6', P_MBps: 2.2, ratio: 0.25, from: 'sample', bytes: 1 << 18 },
      ],
    });
    await until('xor/xz-6');
    // Now an operator pins another mode.
    await handle.signal(pinModeSignal, 'none/gzip-1');
    await until('none/gzip-1');
    return { 'none/zstd-3': 2, 'xor/xz-6': 3, 'none/gzip-1': 1 };
  };
  const { result } = await runWith(undefined, undefined, stream, workflowId);
  assert.ok(result);
  assert.deepEqual(result.modeSwitches.map((s) => [s.from, s.to]), [['none/zstd-3', 'xor/xz-6'], ['xor/xz-6', 'none/gzip-1']]);
  assert.match(result.modeSwitches[0]!.reason, /min\(P, R\/r\) = .*network-bound/);
  assert.equal(result.modeSwitches[0]!.measurements?.R_Mbps, 2);
  assert.equal(result.modeSwitches[1]!.reason, 'pinned by operator');

  const history = await env.client.workflow.getHandle(workflowId).fetchHistory();
  const events = history.events ?? [];
  const signals = events.map((e) => e.workflowExecutionSignaledEventAttributes?.signalName).filter(Boolean);
  assert.deepEqual(signals, ['reportMeasurements', 'pinMode']);
  const memoUpdates = events.filter((e) => e.workflowPropertiesModifiedEventAttributes?.upsertedMemo);
  assert.equal(memoUpdates.length, 2, 'each switch is recorded in the history as a memo update');
  const described = await env.client.workflow.getHandle(workflowId).describe();
  assert.equal((described.memo as { mode?: string } | undefined)?.mode, 'none/gzip-1');
});
