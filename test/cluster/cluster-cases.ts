import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { Connection, type ConnectionOptions } from '@temporalio/client';
import type { EmbeddedCluster } from '../../infra/embedded-cluster.js';
import type { TemporalTarget } from '../../infra/temporal-connection.js';
import { SITE_TOPOLOGY_FILE } from '../../infra/paths.js';
import { killNode, startNode, waitMembership, type ClusterInfo } from '../../infra/temporal-cluster/cluster.js';
import { clusterLayout } from '../../infra/temporal-cluster/layout.js';
import { CLUSTER_BINARIES } from '../../infra/temporal-cluster/tools.js';
import { loadSiteTopology } from '../../engine/placement/load-site-topology.js';
import { executeWorkflow } from '../../client/execute-workflow.js';
import { runHandoff } from '../../client/start-handoff.js';
import { launchVm } from '../../workflows/vm-lifecycle.js';
import { drainCloudlet } from '../../workflows/drain.js';
import { WORKFLOW_TASK_QUEUE, progressQuery } from '../../workflows/definitions.js';
import { drainWorkflowId, type EventPolicy } from '../../workflows/event-definitions.js';
import { CopyMonitor } from '../faults/copy-monitor.js';
import { CLOUDLETS, beats, destroyEverywhere, followHandoff, movedChecks, placesOf } from './site.js';

const run = promisify(execFile);

/** One row of the report: `name` and `passed` as the issue names them, the rest for a reader. */
export interface CaseResult {
  name: string;
  passed: boolean;
  failures: string[];
  seconds: number;
  detail: Record<string, unknown>;
}

export interface CaseContext {
  cluster: EmbeddedCluster;
  info: ClusterInfo;
  /** The cluster's state folder (killNode, startNode). */
  stateDir: string;
  baseImageId: string;
  log(line: string): void;
}

/** Runs one case; an exception is its failure, never the suite's end. */
export async function runCase(name: string, log: (l: string) => void, body: () => Promise<{ failures: string[]; detail: Record<string, unknown> }>): Promise<CaseResult> {
  log(`case: ${name}`);
  const t = Date.now();
  const r = await Promise.resolve().then(body).catch((err: Error) => ({ failures: [`the case itself failed: ${err.message}`], detail: { error: err.stack ?? err.message } }));
  const result = { name, passed: r.failures.length === 0, failures: r.failures, seconds: Math.round((Date.now() - t) / 100) / 10, detail: r.detail };
  log(`  → ${result.passed ? 'PASS' : `FAIL: ${result.failures.join('; ')}`} (${result.seconds} s)`);
  return result;
}

/** Answers 'accepted' if the frontend served GetSystemInfo over these options, else why it refused. */
async function tryConnect(options: ConnectionOptions): Promise<string> {
  try {
    const conn = await Connection.connect({ ...options, connectTimeout: 5_000 });
    try {
      await conn.withDeadline(Date.now() + 5_000, () => conn.workflowService.getSystemInfo({}));
      return 'accepted';
    } finally {
      await conn.close();
    }
  } catch (err) {
    return `refused: ${(err as Error).message.split('\n')[0]!.slice(0, 200)}`;
  }
}

/**
 * The cluster serves only mutual TLS: a plaintext client and a TLS client without a certificate
 * are refused at the balancer's address; the connection the project's processes make from
 * TEMPORAL_ADDRESS and TEMPORAL_TLS_* (envconfig) is accepted.
 */
export async function tlsOnly(info: ClusterInfo, temporal: TemporalTarget): Promise<{ failures: string[]; detail: Record<string, unknown> }> {
  if (!info.tls) return { failures: ['the cluster was brought up without TLS'], detail: {} };
  const plaintext = await tryConnect({ address: info.address });
  const withoutCertificate = await tryConnect({ address: info.address, tls: { serverRootCACertificate: await readFile(info.tls.caFile), serverNameOverride: info.tls.serverName } });
  const fromEnvironment = await tryConnect(temporal.connectionOptions);
  const failures = [
    !plaintext.startsWith('refused') && 'a plaintext connection was accepted',
    !withoutCertificate.startsWith('refused') && 'a TLS connection without a client certificate was accepted',
    !temporal.connectionOptions.tls && 'the target read from TEMPORAL_* carries no TLS',
    fromEnvironment !== 'accepted' && `the mTLS connection from TEMPORAL_* was ${fromEnvironment}`,
  ].filter((f): f is string => typeof f === 'string');
  return { failures, detail: { address: info.address, plaintext, withoutCertificate, fromEnvironment } };
}

/** A VM moves A → B → C: each leg verified, the guest continuing, the VM then at that cloudlet and nowhere else. */
export async function moveChain(ctx: CaseContext): Promise<{ failures: string[]; detail: Record<string, unknown> }> {
  const { client } = ctx.cluster;
  const vmId = 'cl-chain';
  await executeWorkflow(client, launchVm, { vmId, cloudlet: 'A', baseImageId: ctx.baseImageId, workload: { name: 'kvstore', args: ['16', '500'] } });
  const failures: string[] = [];
  const legs: Array<Record<string, unknown>> = [];
  try {
    for (const [from, to] of [['A', 'B'], ['B', 'C']] as const) {
      const leg = await runHandoff(client, { vmId, source: from, target: to }).then((result) => ({ result }), (err: Error) => ({ failure: err.message }));
      const result = 'result' in leg ? leg.result : undefined;
      failures.push(...(await movedChecks(client, vmId, to, leg)));
      legs.push({ from, to, seconds: result && result.totalMs / 1000, downtimeMs: result?.downtimeMs, bytesSent: result?.bytesSent, verified: result?.verified, guestContinued: result?.guestContinued });
      ctx.log(`  ${from} → ${to}: ${result ? `${(result.totalMs / 1000).toFixed(1)} s, downtime ${result.downtimeMs} ms, ${(result.bytesSent / 1e6).toFixed(1)} MB, verified ${result.verified}` : 'failed'}`);
      if (!result) break;
    }
    if (failures.length === 0 && !(await beats(client, 'C', vmId))) failures.push('the guest does not beat at C after the second move');
  } finally {
    await destroyEverywhere(client, [vmId]);
  }
  return { failures, detail: { vmId, legs } };
}

/**
 * B is drained (the drainCloudlet workflow, as an edge.cloudlet.drain event starts it) while two
 * VMs run on it: both leave B, each runs in exactly one place, and no two copies of either ever
 * beat at once (every cloudlet's serial log watched every 200 ms).
 */
export async function drainB(ctx: CaseContext): Promise<{ failures: string[]; detail: Record<string, unknown> }> {
  const { client } = ctx.cluster;
  const vms = ['cl-drain-1', 'cl-drain-2'];
  const runDirs = Object.fromEntries(CLOUDLETS.map((c) => [c, ctx.cluster.workers.get(c)!.runDir]));
  const failures: string[] = [];
  const monitors = vms.map((vmId) => new CopyMonitor(runDirs, vmId));
  try {
    for (const vmId of vms) await executeWorkflow(client, launchVm, { vmId, cloudlet: 'B', baseImageId: ctx.baseImageId, workload: { name: 'heartbeat', args: ['4', '100'] } });
    for (const m of monitors) m.start();
    const policy: EventPolicy = { site: await loadSiteTopology(SITE_TOPOLOGY_FILE), conflictRule: 'queue', searchAttributes: true };
    const report = await client.workflow.execute(drainCloudlet, {
      taskQueue: WORKFLOW_TASK_QUEUE,
      workflowId: drainWorkflowId('B'),
      args: [{ cloudlet: 'B', concurrency: 2, policy, trigger: 'operator' }],
    });
    await sleep(3_000);
    for (const m of monitors) await m.stop();
    const places: Record<string, string[]> = {};
    for (const vmId of vms) {
      places[vmId] = await placesOf(client, vmId);
      const line = report.vms.find((v) => v.vmId === vmId);
      if (!line?.moved) failures.push(`${vmId}: the drain did not move it (${line ? `${line.outcome}: ${line.summary}` : 'not in the report'})`);
      if (places[vmId]!.length !== 1 || !places[vmId]![0]!.endsWith(':running')) failures.push(`${vmId}: the cloudlets report [${places[vmId]!.join(', ')}], want one running copy`);
      if (places[vmId]!.some((p) => p.startsWith('B:'))) failures.push(`${vmId} is still on B`);
    }
    for (const m of monitors) if (m.copiesSeenRunning > 1) failures.push(`${m.vmId}: two copies beat at once (${m.duplicates.length} counters printed twice)`);
    if (report.left.length) failures.push(`the drain left ${report.left.join(', ')} on B`);
    ctx.log(`  drained B in ${(report.totalMs / 1000).toFixed(1)} s: ${vms.map((v) => `${v} → ${places[v]!.join(',')}`).join('; ')}`);
    return { failures, detail: { totalSeconds: report.totalMs / 1000, vms: report.vms.map((v) => ({ vmId: v.vmId, moved: v.moved, outcome: v.outcome, seconds: v.ms / 1000, runsAt: places[v.vmId] })), left: report.left } };
  } finally {
    for (const m of monitors) await m.stop().catch(() => undefined);
    await destroyEverywhere(client, vms);
  }
}

export interface NodeKillFigures {
  verified: boolean;
  guestContinued: boolean;
  /** The handoff under the kill minus the clean one of the same VM just before, seconds. */
  extraSeconds: number | null;
  /** Bytes that crossed the source's uplink beyond the clean handoff's (data plane and Temporal alike). */
  bytesResent: number | null;
  /** Beyond the issue's shape. */
  killedNode?: string;
  /** Whether the node killed was the one whose history service owned the workflow's shard. */
  killedShardOwner?: boolean;
  stepAtKill?: string;
  killedAfterStreamStartMs?: number;
  clean?: { from: string; to: string; seconds: number; bytesSent: number; uplinkBytes: number };
  underKill?: { from: string; to: string; seconds: number; bytesSent: number; uplinkBytes: number };
  bytesSentDifference?: number | null;
  /** The committed stream's reconcile with what the target held from the attempt the kill broke (null: one attempt went through). */
  reconciled?: unknown;
  nodeBackAfterSeconds?: number;
}

/** Which node's history service owns the workflow's shard now (tdbg's DescribeMutableState through the balancer). */
async function historyOwner(info: ClusterInfo, stateDir: string, workflowId: string): Promise<{ node: string; shard: string } | undefined> {
  const tls = info.tls ? ['--tls-ca-path', info.tls.caFile, '--tls-cert-path', info.tls.certFile, '--tls-key-path', info.tls.keyFile, '--tls-server-name', info.tls.serverName] : [];
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('TEMPORAL_')));
  const { stdout } = await run(CLUSTER_BINARIES.tdbg, ['--address', info.address, ...tls, 'workflow', 'describe', '--workflow-id', workflowId], { env, timeout: 10_000 });
  // tdbg 1.32 ends its report with "History service address: 127.0.0.1:17334" and "Shard Id: 3".
  const addr = /History service address:\s*(\S+)/.exec(stdout)?.[1];
  const shard = /Shard Id:\s*(\d+)/.exec(stdout)?.[1] ?? '?';
  const node = clusterLayout({ stateDir, nodeCount: info.nodes.length }).nodes.find((n) => addr?.endsWith(`:${n.grpcPorts.history}`));
  return node ? { node: node.name, shard } : undefined;
}

/**
 * One Temporal server node killed -9 during a handoff's stream step: the handoff completes,
 * verified, the guest continuing, in one place. Measured against a clean handoff of the same VM
 * (kvstore, 64 MiB at 500 updates/s) just before: A → B clean, then B → A under the kill (the
 * links are symmetric). The node killed is the one whose history service owns the workflow's
 * shard (the harder loss); it is started again afterwards and must rejoin every ring.
 */
export async function nodeKillMidStream(ctx: CaseContext): Promise<{ failures: string[]; detail: Record<string, unknown>; figures: NodeKillFigures }> {
  const { client } = ctx.cluster;
  const wan = ctx.cluster.wan;
  const vmId = 'cl-nodekill';
  const uplink = (c: string) => (wan ? wan.uplinkBytes(c) : Promise.resolve(0));
  const figures: NodeKillFigures = { verified: false, guestContinued: false, extraSeconds: null, bytesResent: null };
  const failures: string[] = [];
  let killed: string | undefined;
  await executeWorkflow(client, launchVm, { vmId, cloudlet: 'A', baseImageId: ctx.baseImageId, workload: { name: 'kvstore', args: ['64', '500'] } });
  try {
    // The yardstick: a clean handoff of the same VM and workload, followed the same way.
    let before = await uplink('A');
    const clean = await followHandoff(client, { vmId, source: 'A', target: 'B' });
    const cleanUplink = (await uplink('A')) - before;
    const cleanChecks = await movedChecks(client, vmId, 'B', clean);
    if (cleanChecks.length) return { failures: cleanChecks.map((f) => `clean handoff: ${f}`), detail: {}, figures };
    figures.clean = { from: 'A', to: 'B', seconds: clean.seconds, bytesSent: clean.result!.bytesSent, uplinkBytes: cleanUplink };
    ctx.log(`  clean A → B: ${clean.seconds.toFixed(1)} s, ${(clean.result!.bytesSent / 1e6).toFixed(1)} MB sent, ${(cleanUplink / 1e6).toFixed(1)} MB on A's uplink`);

    const runDirs = Object.fromEntries(CLOUDLETS.map((c) => [c, ctx.cluster.workers.get(c)!.runDir]));
    const monitor = new CopyMonitor(runDirs, vmId);
    monitor.start();
    let streamSeenAt: number | undefined;
    let killing: Promise<void> | undefined;
    before = await uplink('B');
    const underKill = await followHandoff(client, { vmId, source: 'B', target: 'A' }, {
      onProgress: (p, handle) => {
        if (p.step !== 'stream' || killing) return;
        streamSeenAt ??= Date.now();
        // A few seconds into the stream: pages are moving, most are still to go.
        if (Date.now() - streamSeenAt < 3_000) return;
        killing = (async () => {
          const owner = await historyOwner(ctx.info, ctx.stateDir, handle.workflowId).catch((err: Error) => (ctx.log(`  tdbg: ${err.message}`), undefined));
          const node = owner?.node ?? ctx.info.nodes[0]!.name;
          const stepNow = (await handle.query(progressQuery).catch(() => undefined))?.step ?? p.step;
          figures.stepAtKill = stepNow;
          figures.killedAfterStreamStartMs = Date.now() - streamSeenAt!;
          await killNode(node, 'SIGKILL', { stateDir: ctx.stateDir });
          killed = node;
          figures.killedNode = node;
          figures.killedShardOwner = owner !== undefined;
          ctx.log(`  killed ${node} -9 (${owner ? `owner of the workflow's shard ${owner.shard}` : 'shard owner unknown'}) at step ${stepNow}, ${(figures.killedAfterStreamStartMs / 1000).toFixed(1)} s into the stream`);
        })().catch((err: Error) => ctx.log(`  kill: ${err.message}`));
      },
    });
    await killing;
    const killedUplink = (await uplink('B')) - before;
    await sleep(3_000);
    await monitor.stop();
    failures.push(...(await movedChecks(client, vmId, 'A', underKill)));
    if (!killed) failures.push('no node was killed during the stream (the stream ended first, or the kill failed)');
    else if (figures.stepAtKill !== 'stream') failures.push(`the node was killed at step ${figures.stepAtKill}, not during the stream`);
    if (monitor.copiesSeenRunning > 1) failures.push(`two copies beat at once (${monitor.duplicates.length} counters printed twice)`);
    const result = underKill.result;
    figures.verified = result?.verified === true;
    figures.guestContinued = result?.guestContinued === true;
    if (result) {
      figures.underKill = { from: 'B', to: 'A', seconds: underKill.seconds, bytesSent: result.bytesSent, uplinkBytes: killedUplink };
      figures.extraSeconds = Math.round((underKill.seconds - clean.seconds) * 10) / 10;
      figures.bytesResent = wan ? Math.max(0, killedUplink - cleanUplink) : Math.max(0, result.bytesSent - clean.result!.bytesSent);
      figures.bytesSentDifference = result.bytesSent - clean.result!.bytesSent;
      figures.reconciled = result.reconciled;
      ctx.log(`  under the kill B → A: ${underKill.seconds.toFixed(1)} s (${figures.extraSeconds} s extra), ${(result.bytesSent / 1e6).toFixed(1)} MB sent, ${(killedUplink / 1e6).toFixed(1)} MB on B's uplink (${figures.bytesResent} bytes beyond the clean one)`);
    }
  } finally {
    if (killed) {
      const t = Date.now();
      await startNode(killed, { stateDir: ctx.stateDir });
      await waitMembership(ctx.info.nodes.map((n) => n.name), { stateDir: ctx.stateDir });
      figures.nodeBackAfterSeconds = (Date.now() - t) / 1000;
      ctx.log(`  ${killed} started again and back in every ring (${figures.nodeBackAfterSeconds.toFixed(1)} s)`);
    }
    await destroyEverywhere(client, [vmId]);
  }
  return { failures, detail: { ...figures }, figures };
}
