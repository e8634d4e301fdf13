import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { Client, Connection } from '@temporalio/client';
import { REPO_ROOT } from '../infra/paths.js';
import { postEvent, type PostedEvent } from '../client/post-event.js';
import { PlacementPolicySearchAttribute, TriggerSearchAttribute, type HandoffResult } from '../workflows/definitions.js';
import { LOAD_MONITOR_SOURCE, eventWorkflowId, type DrainReport, type EventReport } from '../workflows/event-definitions.js';
import type { CloudletState } from '../activities/cloudlet-activities.js';
import { describeCloudlets } from '../workflows/vm-lifecycle.js';
import { executeWorkflow } from '../client/execute-workflow.js';
import { ehoff } from './support/run-cli.js';
import { recordHistory } from './support/record-history.js';

/**
 * `npm run serve` from a fresh state, driven from outside as an application would: CloudEvents
 * over real HTTP (binary and structured), answers read from the endpoint, and where each VM runs
 * read from every cloudlet's worker — not from the answers.
 */
interface Ready {
  ready: true;
  events: string;
  ui: string;
  tokenFile: string;
  temporalAddress: string;
  baseImageId: string;
}

async function startServe(stateDir: string, extra: string[] = []): Promise<{ child: ChildProcess; ready: Ready; stderr: string[] }> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'client', 'serve.ts'), '--json', '--port', '0', '--max-in-flight', '2', ...extra], {
    cwd: REPO_ROOT,
    env: { ...process.env, EHOFF_STATE_DIR: stateDir, EHOFF_LOG_JSON: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const stderr: string[] = [];
  createInterface({ input: child.stderr! }).on('line', (l) => {
    stderr.push(l);
    if (stderr.length > 200) stderr.shift();
  });
  const ready = await new Promise<Ready>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`serve not ready in 5 minutes:\n${stderr.slice(-30).join('\n')}`)), 300_000);
    createInterface({ input: child.stdout! }).on('line', (l) => {
      if (!l.startsWith('{')) return;
      clearTimeout(timer);
      resolve(JSON.parse(l) as Ready);
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`serve exited (${code}) before it was ready:\n${stderr.slice(-30).join('\n')}`));
    });
  });
  return { child, ready, stderr };
}

async function stopServe(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null) return child.exitCode;
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 90_000);
  const code = await exited;
  clearTimeout(timer);
  return code;
}

const kvstore = { name: 'kvstore', args: ['16', '500', '50'] };
/** Potsdam: B (27 km from Berlin's A, 120 km from Leipzig's C) is the nearest. */
const nearB = { lat: 52.4, lon: 13.06 };

test('npm run serve: CloudEvents launch, move (joined, duplicate), drain, refuse, load monitor, and answer again after a restart', { timeout: 15 * 60_000 }, async (t) => {
  const stateDir = await mkdtemp('/tmp/ehoff-serve-e2e-');
  // C joins the site without the base image: the first VM moved there fetches it on the way.
  let serve = await startServe(stateDir, ['--fresh', '--bare', 'C']);
  let connection: Connection | undefined;
  try {
    const { ready } = serve;
    assert.equal(ready.ready, true);
    assert.match(ready.events, /^http:\/\/127\.0\.0\.1:\d+\/events$/);
    assert.match(ready.ui, /^http:\/\//);
    const token = (await readFile(ready.tokenFile, 'utf8')).trim();
    assert.ok(token.length >= 32, 'the token file holds a token');
    connection = await Connection.connect({ address: ready.temporalAddress });
    const client = new Client({ connection });
    const send = (type: string, data: unknown, id: string, mode: 'binary' | 'structured' = 'binary') =>
      postEvent({ url: ready.events, token, type, data, id, source: '/test/e2e-serve', mode });
    const accepted = (p: PostedEvent, outcome: string, workflowIds: string[]) => {
      assert.equal(p.status, 202, JSON.stringify(p.body));
      assert.equal(p.body.outcome, outcome, JSON.stringify(p.body));
      assert.deepEqual(p.body.workflowIds, workflowIds, JSON.stringify(p.body));
    };
    const site = () => executeWorkflow(client, describeCloudlets, { cloudlets: ['A', 'B', 'C'] });
    const where = async (vmId: string) => {
      const s = await site();
      return Object.values(s).flatMap((c) => (c?.vms.some((v) => v.vmId === vmId) ? [`${c.cloudlet}:${c.vms.find((v) => v.vmId === vmId)!.runState}`] : []));
    };

    // Refusals first: nothing may start from them.
    const noToken = await fetch(ready.events, { method: 'POST', headers: { 'content-type': 'application/cloudevents+json' }, body: '{}' });
    assert.equal(noToken.status, 401);
    const wrongToken = await postEvent({ url: ready.events, token: 'x'.repeat(43), type: 'edge.user.moved', data: { vmId: 'ev-a' } });
    assert.equal(wrongToken.status, 401);
    const malformed = await send('edge.user.moved', { vmId: 'EV A' }, 'bad-1');
    assert.equal(malformed.status, 400);
    assert.match(String(malformed.body.error), /'data\.vmId'/);
    const plain = await fetch(ready.events, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'text/plain' }, body: 'move it' });
    assert.equal(plain.status, 415);
    const unknownVm = await send('edge.user.moved', { vmId: 'nowhere', toCloudlet: 'B' }, 'nowhere-1');
    accepted(unknownVm, 'refused', []);
    assert.match(String(unknownVm.body.reason), /runs on no cloudlet/);

    // Two VMs by launch events: one placed where the event says, one by placement.
    accepted(await send('edge.vm.launch', { vmId: 'ev-a', cloudlet: 'A', workload: kvstore }, 'launch-a'), 'started', ['launch-ev-a']);
    accepted(await send('edge.vm.launch', { vmId: 'ev-b', cloudlet: 'B', workload: kvstore }, 'launch-b', 'structured'), 'started', ['launch-ev-b']);
    await client.workflow.getHandle('launch-ev-a').result();
    await client.workflow.getHandle('launch-ev-b').result();
    assert.deepEqual(await where('ev-a'), ['A:running']);
    assert.deepEqual(await where('ev-b'), ['B:running']);
    accepted(await send('edge.vm.launch', { vmId: 'ev-a', workload: kvstore }, 'launch-a-again'), 'refused', []);

    // The user moves near Potsdam: placement picks B; the same wish by another event joins it;
    // the first event delivered again is a duplicate with the first one's ids.
    const moved = await send('edge.user.moved', { vmId: 'ev-a', near: nearB }, 'move-1');
    accepted(moved, 'started', ['handoff-ev-a']);
    accepted(await send('edge.user.moved', { vmId: 'ev-a', toCloudlet: 'B' }, 'move-2', 'structured'), 'joined', ['handoff-ev-a']);
    const again = await send('edge.user.moved', { vmId: 'ev-a', near: nearB }, 'move-1', 'structured');
    accepted(again, 'duplicate', ['handoff-ev-a']);
    assert.equal(again.body.eventWorkflowId, moved.body.eventWorkflowId);
    const result: HandoffResult = await client.workflow.getHandle('handoff-ev-a').result();
    assert.equal(result.target, 'B');
    assert.equal(result.verified, true);
    assert.equal(result.guestContinued, true);
    assert.deepEqual(await where('ev-a'), ['B:running'], 'after the move the VM runs on B, and only there');
    const report: EventReport = await client.workflow.getHandle(String(moved.body.eventWorkflowId)).result();
    assert.equal(report.placement?.target, 'B');
    assert.deepEqual(report.placement?.candidates.map((c) => [c.cloudlet, c.verdict]), [['A', 'excluded'], ['B', 'chosen'], ['C', 'lost']]);
    assert.match(report.placement!.candidates[2]!.why, /farther/);
    // The audit: the handoff says in the UI's list what moved where and why, and how placement chose.
    const audited = await client.workflow.getHandle('handoff-ev-a').describe();
    assert.equal(await audited.staticSummary(), 'ev-a A → B, user moved');
    assert.match(String(await audited.staticDetails()), /\| C \| lost \| farther/);
    assert.equal(audited.typedSearchAttributes.get(PlacementPolicySearchAttribute), 'nearest-to-user');
    assert.equal(audited.typedSearchAttributes.get(TriggerSearchAttribute), `edge.user.moved /test/e2e-serve move-1`);
    await recordHistory(client, 'handoff-ev-a', 'handoff by event');
    await recordHistory(client, String(moved.body.eventWorkflowId), 'event user moved');
    const runs = await client.workflow.count(`WorkflowId = 'handoff-ev-a'`);
    assert.equal(runs.count, 1, 'three deliveries of two events, one handoff');
    // Delivered again after its workflow closed: still the first answer, still nothing started.
    accepted(await send('edge.user.moved', { vmId: 'ev-a', near: nearB }, 'move-1'), 'duplicate', ['handoff-ev-a']);
    assert.equal((await client.workflow.count(`WorkflowId = 'handoff-ev-a'`)).count, 1);

    // Drain B, two at once: both VMs leave it, none is left; meanwhile the limit of 2 handoffs in
    // flight turns another move away with 429 and Retry-After.
    accepted(await send('edge.cloudlet.drain', { cloudlet: 'B', concurrency: 2 }, 'drain-b'), 'started', ['drain-B']);
    const deadline = Date.now() + 60_000;
    while ((await client.workflow.count(`WorkflowType = 'handoff' AND ExecutionStatus = 'Running'`)).count < 2 && Date.now() < deadline) await sleep(200);
    const limited = await send('edge.user.moved', { vmId: 'ev-b', toCloudlet: 'C' }, 'move-3');
    assert.equal(limited.status, 429, JSON.stringify(limited.body));
    assert.ok(Number(limited.retryAfter) > 0, 'a 429 says when to try again');
    const drained: DrainReport = await client.workflow.getHandle('drain-B').result();
    t.diagnostic(`drain of B: ${drained.vms.map((v) => `${v.vmId} ${(v.ms / 1000).toFixed(1)} s: ${v.summary}`).join('; ')}; total ${(drained.totalMs / 1000).toFixed(1)} s`);
    assert.deepEqual(drained.vms.map((v) => [v.vmId, v.moved]).sort(), [['ev-a', true], ['ev-b', true]], JSON.stringify(drained.vms));
    assert.deepEqual(drained.left, []);
    await recordHistory(client, 'drain-B', 'drain');
    const after = await site();
    assert.deepEqual(after.B?.vms, [], 'B runs no VM after its drain');
    assert.equal(after.B?.draining, false, 'the drain mark is lifted at its end');
    for (const vm of ['ev-a', 'ev-b']) {
      const at = await where(vm);
      assert.equal(at.length, 1, `${vm} runs in exactly one place: ${at.join(', ')}`);
      assert.match(at[0]!, /^(A|C):running$/);
    }
    const status = await ehoff(['--address', ready.temporalAddress, 'status', '--vm', 'ev-b', '--cloudlets', 'A,B,C', '--json']);
    assert.equal(status.code, 0, status.stderr);
    assert.equal(JSON.parse(status.stdout).copies.length, 1);

    // The load monitor: a CPU hog on A keeps it above 85% of its one core for 30 s; the monitor
    // raises edge.cloudlet.overloaded by itself and a VM is moved off A to relieve it.
    const hogSince = new Date();
    accepted(await send('edge.vm.launch', { vmId: 'ev-hog', cloudlet: 'A', workload: { name: 'imageproc', args: ['2', '0'] } }, 'launch-hog'), 'started', ['launch-ev-hog']);
    await client.workflow.getHandle('launch-ev-hog').result();
    let relief: { vmId: string; trigger: string; workflowId: string; runId: string } | undefined;
    for (const until = Date.now() + 180_000; !relief && Date.now() < until; await sleep(2_000)) {
      for await (const w of client.workflow.list({ query: `WorkflowType = 'handoff' AND StartTime > '${hogSince.toISOString()}'` })) {
        const trigger = String(w.memo?.trigger ?? '');
        if (trigger.startsWith('edge.cloudlet.overloaded ehoff://load-monitor A-')) relief = { vmId: String(w.memo?.vmId), trigger, workflowId: w.workflowId, runId: w.runId };
      }
    }
    assert.ok(relief, 'the load monitor moved a VM off A within 3 minutes of the hog starting');
    const overloadEvent: EventReport = await client.workflow.getHandle(eventWorkflowId(LOAD_MONITOR_SOURCE, relief.trigger.split(' ').at(-1)!)).result();
    t.diagnostic(`load monitor: ${relief.trigger} → ${overloadEvent.admission.outcome} ${overloadEvent.admission.workflowIds.join(', ')}: ${overloadEvent.admission.reason}; ${overloadEvent.followed.join('; ')}`);
    const relieved: HandoffResult = await client.workflow.getHandle(relief.workflowId, relief.runId).result();
    await recordHistory(client, eventWorkflowId(LOAD_MONITOR_SOURCE, relief.trigger.split(' ').at(-1)!), 'event overloaded');
    assert.equal(relieved.source, 'A');
    assert.equal(relieved.verified, true);
    const reliefAt = await where(relief.vmId);
    assert.equal(reliefAt.length, 1, `${relief.vmId} runs in exactly one place: ${reliefAt.join(', ')}`);
    assert.notEqual(reliefAt[0]!.split(':')[0], 'A');

    // A move to C, which lacks the base: the target fetches it from the source first, verified,
    // and the handoff completes; the fetch is reported apart from the handoff.
    assert.deepEqual((await site()).C?.baseImages, [], 'C starts without the base image');
    const toC = await send('edge.user.moved', { vmId: relief.vmId, toCloudlet: 'C' }, 'move-to-c');
    accepted(toC, 'started', [`handoff-${relief.vmId}`]);
    const withFetch: HandoffResult = await client.workflow.getHandle(`handoff-${relief.vmId}`).result();
    assert.equal(withFetch.target, 'C');
    assert.equal(withFetch.verified, true);
    assert.ok(withFetch.baseFetch, 'the handoff reports the base fetch');
    assert.equal(withFetch.baseFetch.baseImageId, ready.baseImageId);
    assert.ok(withFetch.baseFetch.wireBytes > 0 && withFetch.baseFetch.ms > 0);
    t.diagnostic(`base fetch for C: ${(withFetch.baseFetch.wireBytes / 1e6).toFixed(1)} MB on the wire (${(withFetch.baseFetch.rawBytes / 1e6).toFixed(1)} MB of parts) in ${(withFetch.baseFetch.ms / 1000).toFixed(1)} s from ${withFetch.baseFetch.from}; then the handoff ${(withFetch.totalMs / 1000).toFixed(1)} s, downtime ${withFetch.downtimeMs} ms`);
    assert.deepEqual((await site()).C?.baseImages, [ready.baseImageId], 'C holds the base now');
    const atC = await where(relief.vmId);
    assert.deepEqual(atC, ['C:running'], `${relief.vmId} runs on C only`);

    // A restart of the service: the same event is still a duplicate, and starts nothing.
    assert.equal(await stopServe(serve.child), 0, 'serve stops cleanly on SIGTERM');
    await connection.close();
    connection = undefined;
    serve = await startServe(stateDir, ['--bare', 'C']);
    const token2 = (await readFile(serve.ready.tokenFile, 'utf8')).trim();
    assert.equal(token2, token, 'the token survives a restart');
    const afterRestart = await postEvent({ url: serve.ready.events, token, type: 'edge.user.moved', data: { vmId: 'ev-a', near: nearB }, id: 'move-1', source: '/test/e2e-serve' });
    accepted(afterRestart, 'duplicate', ['handoff-ev-a']);
  } finally {
    await connection?.close().catch(() => undefined);
    const code = await stopServe(serve.child);
    if (code !== 0) console.error(serve.stderr.slice(-40).join('\n'));
    await rm(stateDir, { recursive: true, force: true });
  }
});
