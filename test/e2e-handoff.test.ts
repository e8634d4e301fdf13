import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import proto from '@temporalio/proto';
import { setTimeout as sleep } from 'node:timers/promises';
import { WorkflowFailedError } from '@temporalio/client';
import { HandoffFailedError, InvalidRequestError, runHandoff } from '../client/start-handoff.js';
import { startEmbeddedCluster, type EmbeddedCluster } from '../infra/embedded-cluster.js';
import { DEV_PKI_DIR } from '../infra/paths.js';
import type { HandoffResult } from '../workflows/definitions.js';
import type { VmDescription } from '../activities/cloudlet-activities.js';
import { testBaseImage, tempRoot } from './support/fixtures.js';
import { keyMaterial } from './support/key-material.js';
import { ehoff } from './support/run-cli.js';
import { recordHistory } from './support/record-history.js';
import { EXIT } from '../client/cli/exit-codes.js';
import type { Workflow } from '@temporalio/common';
import { executeWorkflow } from '../client/execute-workflow.js';
import { handoff } from '../workflows/handoff.js';
import { describeVm, destroyVm, launchVm } from '../workflows/vm-lifecycle.js';
import { DEFAULT_MODE, modeId } from '../engine/adaptation/mode.js';

// The real path end to end: the embedded Temporal dev server, one worker process per cloudlet,
// a QEMU guest with its disk on FUSE. C is a cloudlet whose cache lacks the base image.

let root: Awaited<ReturnType<typeof tempRoot>>;
let cluster: EmbeddedCluster;
let baseImageId: string;

before(async () => {
  const base = await testBaseImage();
  baseImageId = base.id;
  root = await tempRoot('e2e');
  cluster = await startEmbeddedCluster({
    runTag: `e2e-${process.pid}`,
    devServer: { dbFile: join(root.dir, 'temporal.db') },
    cloudlets: [
      { name: 'A', baseImages: [base.dir], imageCacheDir: join(root.dir, 'A-images') },
      { name: 'B', baseImages: [base.dir], imageCacheDir: join(root.dir, 'B-images') },
      { name: 'C', baseImages: [], imageCacheDir: join(root.dir, 'C-images') },
    ],
  });
  await workflow(launchVm, { vmId: 'e2e-vm', cloudlet: 'A', baseImageId, workload: { name: 'heartbeat', args: ['16', '100'] } });
});

after(async () => {
  await cluster?.stop();
  await root?.remove();
});

/** Runs one of the short workflows (or a handoff started around the client) to its result. */
const workflow = <W extends Workflow>(wf: W, ...args: Parameters<W>) => executeWorkflow(cluster.client, wf, ...args);

/** The VM runs at A and its guest is alive: the heartbeat advances between two looks. */
async function assertRunningAtA(): Promise<void> {
  const first = await workflow(describeVm, { vmId: 'e2e-vm', cloudlet: 'A' });
  assert.equal(first.runState, 'running');
  await sleep(700);
  const second = await workflow(describeVm, { vmId: 'e2e-vm', cloudlet: 'A' });
  assert.ok(second.lastHeartbeat! > first.lastHeartbeat!, `heartbeat advances at A (${first.lastHeartbeat} → ${second.lastHeartbeat})`);
}

test('a malformed trigger is rejected before any workflow starts, naming the field', async () => {
  await assert.rejects(runHandoff(cluster.client, { vmId: 'e2e-vm', source: 'A' }), (err: unknown) => {
    assert.ok(err instanceof InvalidRequestError);
    assert.match(err.message, /malformed handoff request: 'target'/);
    return true;
  });
  await assert.rejects(runHandoff(cluster.client, { vmId: 'E2E VM', source: 'A', target: 'B' }), /'vmId': a VM id is/);
  await assertRunningAtA();
});

test('an unknown cloudlet is rejected by name', async () => {
  await assert.rejects(runHandoff(cluster.client, { vmId: 'e2e-vm', source: 'A', target: 'Z' }), (err: unknown) => {
    assert.ok(err instanceof InvalidRequestError);
    assert.match(err.message, /unknown cloudlet 'Z': no worker polls task queue cloudlet-Z/);
    return true;
  });
  await assertRunningAtA();
});

test('an unknown VM fails the handoff with a clear error', async () => {
  await assert.rejects(runHandoff(cluster.client, { vmId: 'no-such-vm', source: 'A', target: 'B' }), (err: unknown) => {
    assert.ok(err instanceof HandoffFailedError);
    assert.match(err.message, /no VM 'no-such-vm' on cloudlet A/);
    return true;
  });
  await recordHistory(cluster.client, 'handoff-no-such-vm', 'handoff unknown vm');
  await assertRunningAtA();
});

test('a target that lacks the base image fetches it from the source first, and the handoff completes', async () => {
  const seen: string[] = [];
  const there: HandoffResult = await runHandoff(cluster.client, { vmId: 'e2e-vm', source: 'A', target: 'C' }, (p) => seen.push(p.step));
  assert.ok(seen.includes('fetch-base'), `a fetch-base step: ${seen.join(', ')}`);
  assert.equal(there.verified, true);
  assert.equal(there.guestContinued, true);
  assert.ok(there.baseFetch && there.baseFetch.baseImageId === baseImageId && there.baseFetch.from === 'A' && there.baseFetch.wireBytes > 0, JSON.stringify(there.baseFetch));
  const span = there.steps.at(-1)!.endedAt! - there.steps[0]!.startedAt;
  assert.ok(there.totalMs <= span - there.baseFetch.ms + 1_000, `the handoff (${there.totalMs} ms) is timed apart from the fetch (${there.baseFetch.ms} ms of ${span} ms)`);
  await recordHistory(cluster.client, there.workflowId, 'handoff base fetched');
  // Back: both hold it now, nothing travels but the overlay.
  const back: HandoffResult = await runHandoff(cluster.client, { vmId: 'e2e-vm', source: 'C', target: 'A' });
  assert.equal(back.baseFetch, null);
  // Both ways the written pages came from the kernel's dirty log, on the guest's first QEMU and on
  // the one its target started (with the library preloaded too), and each verified.
  assert.deepEqual([there.memoryTracking, back.memoryTracking], [{ kind: 'dirty-log' }, { kind: 'dirty-log' }]);
  assert.equal(back.verified, true);
  await assertRunningAtA();
});

test('a workflow started around the client with bad input fails without touching a VM', async () => {
  await assert.rejects(workflow(handoff, { vmId: 'e2e-vm', source: 'A', target: 'A' }), (err: unknown) => {
    assert.ok(err instanceof WorkflowFailedError);
    assert.match(String(err.cause?.message), /source and target must be different/);
    return true;
  });
  await assertRunningAtA();
});

test('the VM moves A → B: state verified, guest goes on, each step in the history', async (t) => {
  const seen: string[] = [];
  const result: HandoffResult = await runHandoff(cluster.client, { vmId: 'e2e-vm', source: 'A', target: 'B' }, (p) => seen.push(p.step));
  assert.equal(result.verified, true);
  assert.equal(result.guestContinued, true);
  assert.ok(result.heartbeatAfterResume! > result.heartbeatAtStop!);
  const epochChunks = result.epochs.reduce((n, e) => n + e.memoryPages + e.diskBlocks, 0);
  assert.equal(result.stages.chunks, epochChunks, 'every chunk of every epoch went through the pipeline');
  assert.ok(result.epochs[0]!.live && !result.epochs.at(-1)!.live, 'live epochs, then one stop-and-copy');
  assert.ok(result.bytesSent > result.stages.payloadBytes, 'the overlay (and the compressed device state) went over the data plane');
  assert.ok(result.guestGapMs !== null && result.guestGapMs >= result.downtimeMs - 50, `the guest-side gap (${result.guestGapMs} ms) spans the host-side downtime (${result.downtimeMs} ms)`);
  assert.ok(result.stages.payloadBytes < result.stages.inputBytes, 'and it went reduced');
  assert.ok(result.downtimeMs > 0 && result.downtimeMs < result.totalMs);
  assert.ok(seen.includes('stream'), 'progress was reported while it ran');

  const onB = await workflow(describeVm, { vmId: 'e2e-vm', cloudlet: 'B' });
  assert.equal(onB.runState, 'running');
  await assert.rejects(workflow(describeVm, { vmId: 'e2e-vm', cloudlet: 'A' }), (err: unknown) => {
    const activityFailure = (err as WorkflowFailedError).cause?.cause as Error | undefined;
    assert.match(String(activityFailure?.message), /no VM 'e2e-vm' on cloudlet A/);
    return true;
  });

  // The audit trail: the history holds each step as an activity, in order (the target's
  // finish — verify, then resume — is scheduled with the stream, to be waiting when its last
  // frame lands).
  const history = await cluster.client.workflow.getHandle(result.workflowId).fetchHistory();
  const activities = (history.events ?? [])
    .map((e) => e.activityTaskScheduledEventAttributes)
    .filter((a) => a != null)
    .map((a) => `${a.activityType?.name}@${a.taskQueue?.name}`);
  assert.deepEqual(activities, [
    // Whether the target holds the VM's base (it does: nothing to fetch first).
    'describeVm@cloudlet-A',
    'holdsBaseImage@cloudlet-B',
    'snapshot@cloudlet-A',
    'negotiateBaseImage@cloudlet-B',
    'finish@cloudlet-B',
    'streamOverlay@cloudlet-A',
    'retire@cloudlet-A',
  ]);

  // The audit record: what the UI's list shows and an auditor filters by, set as it ran.
  const handle = cluster.client.workflow.getHandle(result.workflowId);
  const described = await handle.describe();
  assert.equal(await described.staticSummary(), 'e2e-vm A → B, operator');
  assert.match(String(await described.staticDetails()), /Move VM `e2e-vm` from \*\*A\*\* to \*\*B\*\*/);
  const sa = described.typedSearchAttributes;
  assert.deepEqual(
    Object.fromEntries(['EdgeVmId', 'EdgeSourceCloudlet', 'EdgeTargetCloudlet', 'EdgeTrigger', 'EdgePlacementPolicy', 'EdgePhase', 'EdgeOutcome', 'EdgeMode', 'EdgeConverged', 'EdgeDowntimeMs', 'EdgeBytesSent'].map((k) => [k, sa.getAll().find((p) => p.key.name === k)?.value])),
    {
      EdgeVmId: 'e2e-vm', EdgeSourceCloudlet: 'A', EdgeTargetCloudlet: 'B', EdgeTrigger: 'operator', EdgePlacementPolicy: 'operator', EdgePhase: 'done', EdgeOutcome: 'moved',
      EdgeMode: result.modeSwitches.at(-1)?.to ?? modeId(DEFAULT_MODE), EdgeConverged: result.precopy.converged,
      EdgeDowntimeMs: Math.round(result.downtimeMs), EdgeBytesSent: result.bytesSent,
    },
  );
  // A visibility query finds exactly the handoffs it names: this one is over downtime − 1 ms, not over its downtime.
  const listed = async (q: string) => (JSON.parse((await ehoff(['list', '--query', q, '--json'], { TEMPORAL_ADDRESS: cluster.address })).stdout) as { handoffs: Array<{ workflowId: string; startedAt: string }> }).handoffs;
  const slower = `EdgeOutcome = "moved" AND EdgeVmId = "e2e-vm" AND EdgeDowntimeMs > ${Math.round(result.downtimeMs) - 1}`;
  assert.ok((await listed(slower)).some((r) => r.startedAt === described.startTime.toISOString()), `listed by ${slower}`);
  assert.ok(!(await listed(`EdgeOutcome = "moved" AND EdgeVmId = "e2e-vm" AND EdgeDowntimeMs > ${Math.round(result.downtimeMs)}`)).some((r) => r.startedAt === described.startTime.toISOString()));
  const bad = await ehoff(['list', '--query', 'EdgeNope = "x"'], { TEMPORAL_ADDRESS: cluster.address });
  assert.equal(bad.code, EXIT.REJECTED);
  assert.match(bad.stderr, /--query "EdgeNope = \\"x\\"": .*EdgeNope/);
  // A history an auditor reads: every activity says what it does; each pre-copy decision is a
  // signal with its figures; tens of events, not one per second of stream.
  const events = history.events ?? [];
  const scheduled = events.filter((e) => e.activityTaskScheduledEventAttributes);
  assert.ok(scheduled.every((e) => e.userMetadata?.summary?.data?.length), 'each activity has a summary');
  const decisions = events.filter((e) => e.workflowExecutionSignaledEventAttributes?.signalName === 'precopyDecision');
  t.diagnostic(`history: ${events.length} events for a ${(result.totalMs / 1000).toFixed(1)} s handoff, ${decisions.length} pre-copy decisions, ${result.epochs.length} epochs`);
  assert.equal(decisions.length, result.precopy.decisions?.length, 'each pre-copy decision is in the history');
  assert.equal(result.precopy.decisions?.filter((d) => d.action === 'stop').length, 1, `one stop among ${JSON.stringify(result.precopy.decisions)}`);
  // ~21 for the seven activities, ~3 per workflow task, one per phase and the end's attributes.
  assert.ok(events.length < 80, `${events.length} events in the history`);
  await recordHistory(cluster.client, result.workflowId, 'handoff moved');

  // Nothing in it grants access: the data plane is bound to the cloudlets' certificates, and no
  // key, token or secret of theirs is written to history (payloads, memo, search attributes,
  // heartbeats, failures: the whole encoded history is searched).
  const encoded = Buffer.from(proto.temporal.api.history.v1.History.encode(history).finish()).toString('latin1');
  assert.ok(encoded.includes('negotiateBaseImage'), 'the search reads the history itself');
  for (const secret of (await keyMaterial(DEV_PKI_DIR)).texts) assert.ok(!encoded.includes(secret), `key material (${secret.slice(0, 12)}…) is not in the history`);
  assert.doesNotMatch(encoded, /PRIVATE KEY|"token"/);
});

test('an operator can start a handoff pinned to a mode and capped: the stream obeys both', async () => {
  const cap = 40;
  const result = await runHandoff(cluster.client, { vmId: 'e2e-vm', source: 'B', target: 'A', pinnedMode: 'none/gzip-1', bandwidthCapMbps: cap });
  assert.equal(result.verified, true);
  assert.equal(result.guestContinued, true);
  assert.deepEqual(Object.keys(result.modesUsed), ['none/gzip-1'], 'every batch went in the pinned mode');
  assert.equal(result.modeSwitches[0]?.reason, 'pinned by operator');
  await recordHistory(cluster.client, result.workflowId, 'handoff pinned mode');
  const stream = result.steps.find((s) => s.step === 'stream')!;
  const floorMs = ((result.stages.payloadBytes * 8) / (cap * 1e6)) * 1000;
  assert.ok(stream.endedAt! - stream.startedAt >= floorMs * 0.9, `the stream took ${stream.endedAt! - stream.startedAt} ms, no less than the cap allows (${floorMs.toFixed(0)} ms)`);
  await assert.rejects(runHandoff(cluster.client, { vmId: 'e2e-vm', source: 'A', target: 'B', pinnedMode: 'xor/zstd-4' }), /'pinnedMode'/);
});

test('npm run handoff (the CLI trigger) rejects a malformed request with exit status 2 and says why', async () => {
  const r = await ehoff(['--vm', 'e2e-vm', '--from', 'B', '--to', 'nowhere!'], { TEMPORAL_ADDRESS: cluster.address }, 'handoff.ts');
  assert.equal(r.code, EXIT.REJECTED);
  assert.match(r.stderr, /malformed handoff request: 'target'/);
  const unknown = await ehoff(['--vm', 'e2e-vm', '--from', 'B', '--to', 'Z'], { TEMPORAL_ADDRESS: cluster.address }, 'handoff.ts');
  assert.equal(unknown.code, EXIT.REJECTED);
  assert.match(unknown.stderr, /handoff rejected: unknown cloudlet 'Z'/);
});

test('the operator CLI: launch a VM, see where it runs, move it, see it moved; steering a finished handoff is refused', async () => {
  const env = { TEMPORAL_ADDRESS: cluster.address };
  const launched = await ehoff(['launch', '--vm', 'cli-vm', '--on', 'A', '--base', baseImageId, '--workload', 'heartbeat', '--args', '4', '100', '--json'], env);
  assert.equal(launched.code, EXIT.OK, launched.stderr);
  assert.equal((JSON.parse(launched.stdout) as VmDescription).runState, 'running');
  const before = await ehoff(['status', '--vm', 'cli-vm', '--cloudlets', 'A,B,C', '--json'], env);
  assert.equal(before.code, EXIT.OK, before.stderr);
  assert.deepEqual(JSON.parse(before.stdout), { vmId: 'cli-vm', cloudlet: 'A', runState: 'running', copies: [{ cloudlet: 'A', runState: 'running' }] });
  // Followed by `watch` as it runs: one JSON object a second, then its end. Capped so that the
  // stream outlasts a sample or two: this guest's handoff sends ~130 kB, 0.13 s at 8 Mbit/s and
  // 0.27 s at 4 — at either, `watch` missed the stream in some runs; at 0.5 it takes ~2 s.
  const [moved, watched] = await Promise.all([
    ehoff(['trigger', '--vm', 'cli-vm', '--from', 'A', '--to', 'B', '--cap', '0.5', '--json'], env),
    ehoff(['watch', '--vm', 'cli-vm', '--json'], env),
  ]);
  assert.equal(watched.code, EXIT.OK, watched.stderr);
  const samples = watched.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.deepEqual(samples.at(-1), { done: true, workflowId: 'handoff-cli-vm', status: 'COMPLETED' });
  assert.ok(samples.some((s) => s.step === 'stream'), `a sample during the stream (${samples.map((s) => s.step).join(', ')})`);
  // A sample taken once the stream reported carries the pre-copy's epoch (a loopback handoff may
  // end before its first report; engine-handoff.test.ts checks the reports themselves).
  const measured = samples.filter((s) => s.step === 'stream' && s.inputBytes !== null);
  assert.ok(measured.every((s) => typeof s.epoch === 'number' && (s.toSendBytes === null || (s.toSendBytes as number) >= 0)), JSON.stringify(measured));
  assert.equal(moved.code, EXIT.OK, moved.stderr);
  const result = JSON.parse(moved.stdout.trim().split('\n').at(-1)!) as HandoffResult;
  assert.equal(result.verified, true);
  assert.equal(result.target, 'B');
  const after = await ehoff(['status', '--vm', 'cli-vm', '--cloudlets', 'A,B,C', '--json'], env);
  assert.deepEqual(JSON.parse(after.stdout), {
    vmId: 'cli-vm', cloudlet: 'B', runState: 'running',
    handoff: { workflowId: 'handoff-cli-vm', status: 'COMPLETED' },
    copies: [{ cloudlet: 'B', runState: 'running' }],
  });
  const listed = await ehoff(['list', '--json'], env);
  assert.equal(listed.code, EXIT.OK, listed.stderr);
  const rows = (JSON.parse(listed.stdout) as { handoffs: Array<Record<string, string>> }).handoffs;
  assert.deepEqual(
    (({ workflowId, status, vmId, source, target }) => ({ workflowId, status, vmId, source, target }))(rows.find((r) => r.workflowId === 'handoff-cli-vm')!),
    { workflowId: 'handoff-cli-vm', status: 'COMPLETED', vmId: 'cli-vm', source: 'A', target: 'B' },
  );
  assert.deepEqual(JSON.parse((await ehoff(['list', '--running', '--json'], env)).stdout), { handoffs: [] }, 'nothing in flight');
  const capped = await ehoff(['cap', '--vm', 'cli-vm', '--mbps', '5'], env);
  assert.equal(capped.code, EXIT.REJECTED);
  assert.match(capped.stderr, /no handoff of VM 'cli-vm' is in flight/);
  const again = await ehoff(['trigger', '--vm', 'cli-vm', '--from', 'B', '--to', 'B'], env);
  assert.equal(again.code, EXIT.REJECTED);
  await workflow(destroyVm, { vmId: 'cli-vm', cloudlet: 'B' });
});
