import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import proto from '@temporalio/proto';
import type { Client } from '@temporalio/client';
import { runHandoff } from '../../client/start-handoff.js';
import { HANDSHAKE_TIMEOUT_MS } from '../../engine/wire/data-plane-server.js';
import type { EmbeddedCluster } from '../../infra/embedded-cluster.js';
import { DEV_PKI_DIR, REPO_ROOT } from '../../infra/paths.js';
import { HANDOFF_STEPS, progressQuery, type HandoffResult, type HandoffStep } from '../../workflows/definitions.js';
import { CopyMonitor } from '../faults/copy-monitor.js';
import { keyMaterial } from '../support/key-material.js';
import type { helloWith } from '../support/raw-data-client.js';
import { executeWorkflow } from '../../client/execute-workflow.js';
import { destroyVm, launchVm } from '../../workflows/vm-lifecycle.js';
import { reassemble, startCapture } from './capture.js';
import { RssSampler } from './rss-sampler.js';

const run = promisify(execFile);
const MiB = 1 << 20;

/** One row of the suite's report (the JSON shape the issue names). */
export interface SecurityCheck {
  name: string;
  passed: boolean;
  /** The measured figure the verdict rests on, in words. */
  figure: string;
}

export interface SecurityOptions {
  /** Cloudlets A, B and C on a WAN testbed, with the embedded dev server. */
  cluster: EmbeddedCluster;
  baseImageId: string;
  /** A scratch folder of this run's (captures, another site's CA). */
  workDir: string;
  log(line: string): void;
}

/** The target's refusal of any hello it does not take (see DataPlaneServer). */
const NOT_EXPECTED = 'no handoff here expects this connection';
/** More than this added to the target's RSS by a flood or a bomb fails the check (the issue's bound). */
const RSS_BOUND = 64 * MiB;
/** How long after a handoff its VM is watched before where it runs is read (the source's last beats are older by then). */
const SETTLE_MS = 3_000;
/** A bystander silent longer than this while bombs land has been held up. */
const BYSTANDER_SILENCE_BOUND_MS = 2_000;

/**
 * The data plane attacked on the real stack: cloudlets A, B and C in their namespaces on the
 * shaped WAN, their workers and VMs, the attacker a process of its own in C's namespace. Two real
 * handoffs A → B run while it works: the first, of a guest whose memory holds a random marker,
 * under a packet capture on A's link and with strangers knocking at B; the second, capped to
 * 4 Mbit/s so it streams long enough, under a flood of slow connections, two decompression
 * bombs sent with the source's own certificate, and a connection that tries to outlive the
 * commit. Then both histories are read. Every check watches the cloudlets, not return values.
 */
export async function runSecuritySuite(o: SecurityOptions): Promise<SecurityCheck[]> {
  const { cluster, log } = o;
  const wan = cluster.wan;
  if (!wan) throw new Error('the security suite needs the WAN testbed (cloudlets in namespaces)');
  const checks: SecurityCheck[] = [];
  const check = (name: string, passed: boolean, figure: string) => {
    checks.push({ name, passed, figure });
    log(`  ${passed ? 'PASS' : 'FAIL'} ${name}: ${figure}`);
  };
  const runDirs = Object.fromEntries([...cluster.workers].map(([name, w]) => [name, w.runDir]));
  const B = cluster.workers.get('B')!;
  const target = { host: B.dataPlane.host, port: B.dataPlane.port, pkiDir: DEV_PKI_DIR };
  const attack = (command: string, args: object, from = 'C') => attackFrom(wan.cloudlet(from).ns, command, { ...target, ...args });
  const vms: Array<{ vmId: string; cloudlet: string }> = [];
  const launch = async (vmId: string, cloudlet: string, workload: { name: string; args: string[] }) => {
    await executeWorkflow(cluster.client, launchVm, { vmId, cloudlet, baseImageId: o.baseImageId, workload });
    vms.push({ vmId, cloudlet });
  };
  try {
    await launch('sec-bystander', 'B', { name: 'heartbeat', args: ['4', '100'] });

    // 1. A marked guest moves under a capture of A's link, strangers knocking at B meanwhile.
    log('handoff 1: a marked guest A → B, captured on A\'s link, strangers at B');
    await launch('sec-marked', 'A', { name: 'marker', args: ['16', '100'] });
    const marker = await markerOf(join(runDirs.A!, 'vms', 'sec-marked', 'serial.log'));
    const a = wan.cloudlet('A');
    const capture = await startCapture(a.ns, a.dev, join(o.workDir, 'a-link.pcap'));
    const moved1 = new CopyMonitor(runDirs, 'sec-marked');
    moved1.start();
    const handoff1 = settled(runHandoff(cluster.client, { vmId: 'sec-marked', source: 'A', target: 'B' }));
    const h1 = await streaming(cluster.client, 'handoff-sec-marked');
    const peers = (await attack('peers', { handoffId: h1, otherSiteDir: join(o.workDir, 'other-site') })) as Record<'bare' | 'foreign' | 'other', HelloOutcome>;
    // The control: a string of the marker's shape sent in the clear across the same link.
    const probe = `EHOFF-MARKER-${randomBytes(16).toString('hex')}`;
    await attack('probe', { text: probe }, 'A');
    const stepAfterPeers = await stepOf(cluster.client, 'handoff-sec-marked');
    const r1 = await handoff1;
    await sleep(SETTLE_MS);
    await moved1.stop();
    const captured = await capture.stop();
    const alongside1 = handoffFigure(r1, moved1);
    check('handoff alongside strangers and a capture', alongside1.ok, alongside1.figure);
    for (const [key, name] of [['bare', 'a connection without a certificate is refused'], ['foreign', "a certificate of another site's CA (named A) is refused"]] as const) {
      const p = peers[key];
      check(name, p.frames.length === 0 && p.closed, `${p.frames.length} frames back; ${p.closed ? 'closed by the target' : 'still open after 10 s'}${p.error ? `: ${p.error.replace(/^.*?(alert [a-z ]+).*$/s, '$1')}` : ''}`);
    }
    check(
      "another cloudlet's certificate (C) is refused for A's handoff while it streams",
      peers.other.refusal === NOT_EXPECTED && peers.other.frames.length === 1 && stepAfterPeers === 'stream',
      `TLS ${peers.other.secured ? 'up' : 'refused'}; answer '${peers.other.refusal ?? 'none'}' (${peers.other.frames.length} frames); the handoff was at '${stepAfterPeers}' after`,
    );

    const flows = await reassemble(capture.file, join(o.workDir, 'a-link-flows'));
    const keys = await keyMaterial(DEV_PKI_DIR);
    const dataPlane = flows.filter((f) => (f.to.port === B.dataPlane.port || f.from.port === B.dataPlane.port) && !f.data.includes(probe));
    const sentOnDataPlane = dataPlane.filter((f) => f.to.port === B.dataPlane.port).reduce((n, f) => n + f.data.length, 0);
    const withMarker = flows.filter((f) => f.data.includes(marker)).length + ((await readFile(capture.file)).includes(marker) ? 1 : 0);
    const withKey = flows.filter((f) => keys.bytes.some((k) => f.data.includes(k)) || keys.texts.some((t) => f.data.includes(t))).length;
    const controlFlows = flows.filter((f) => f.data.includes(probe)).length;
    // And the marker did cross: the guest's memory at B holds it.
    const markedAtB = await occurrencesInRam('/dev/shm', 'ehoff-B-sec-marked-', marker);
    const allTls = dataPlane.every((f) => f.data[0] === 0x16 && f.data[1] === 0x03);
    check(
      'a capture of the handoff holds neither the marker nor key material',
      withMarker === 0 && withKey === 0 && controlFlows === 1 && markedAtB > 0 && allTls && r1 !== undefined && sentOnDataPlane >= r1.bytesSent && captured.dropped === 0,
      `${captured.packets} packets (${captured.dropped} dropped), ${dataPlane.length} data-plane flows (${allTls ? 'all TLS' : 'NOT all TLS'}) carrying ${mb(sentOnDataPlane)} to B ` +
        `for a ${r1 ? mb(r1.bytesSent) : '?'} overlay; marker found in ${withMarker}, key material (${keys.keys.length} keys) in ${withKey}; ` +
        `controls: a marker-shaped probe sent in the clear across the link found in ${controlFlows} of ${flows.length} flows, the marker in ${markedAtB} places of the guest's memory at B`,
    );

    // 2. A busy guest moves capped at 2 Mbit/s while the target is flooded and bombed.
    log('handoff 2: a busy guest A → B at 2 Mbit/s, flooded and bombed');
    await launch('sec-busy', 'A', { name: 'kvstore', args: ['64', '500'] });
    const moved2 = new CopyMonitor(runDirs, 'sec-busy');
    moved2.start();
    const handoff2 = settled(runHandoff(cluster.client, { vmId: 'sec-busy', source: 'A', target: 'B', bandwidthCapMbps: 2 }));
    const h2 = await streaming(cluster.client, 'handoff-sec-busy');
    const lingering = attack('linger', { handoffId: h2 }) as Promise<HelloOutcome & { hellos: number }>;
    await sleep(3_000);

    const floodRss = new RssSampler(B.pid);
    await floodRss.baseline(1_000);
    const flood = (await attack('flood', { count: 200 })) as FloodOutcome;
    const floodGrowth = floodRss.stop();
    const stepAfterFlood = await stepOf(cluster.client, 'handoff-sec-busy');
    const lifetimes = flood.connections.map((c) => c.lifetimeMs);
    const maxLifetime = Math.max(...lifetimes.map((l) => l ?? Infinity));
    const byKind = (kind: string) => flood.connections.filter((c) => c.kind === kind);
    check(
      '200 slow connections announcing 16 MiB frames are bounded, closed within the handshake timeout',
      lifetimes.every((l) => l !== null) && maxLifetime <= HANDSHAKE_TIMEOUT_MS + 1_500 && floodGrowth < RSS_BOUND && stepAfterFlood === 'stream',
      `target RSS +${mib(floodGrowth)}; longest connection ${(maxLifetime / 1000).toFixed(2)} s (timeout ${HANDSHAKE_TIMEOUT_MS / 1000} s); ` +
        ['tls-frame', 'plain-frame', 'tls-record'].map((k) => `${k}: ${byKind(k).length} (${byKind(k).filter((c) => c.up).length} got through to announce)`).join(', ') +
        `; the handoff alongside was at '${stepAfterFlood}'`,
    );

    const bystander = new CopyMonitor({ B: runDirs.B! }, 'sec-bystander');
    bystander.start();
    for (const codec of ['zstd', 'xz'] as const) {
      const rss = new RssSampler(B.pid);
      await rss.baseline(500);
      const bomb = (await attack('bomb', { handoffId: h2, codec })) as BombOutcome;
      const growth = rss.stop();
      const last = bomb.tries.at(-1);
      const refused = new RegExp(`inflates past the ${bomb.declared} bytes`).test(last?.refusal ?? '');
      check(
        `a ${codec} bomb is refused with bounded memory`,
        refused && growth < RSS_BOUND,
        `${kb(bomb.wireBytes)} declaring ${bomb.declared} B, inflating to ${mib(bomb.inflatesTo)}: '${last?.refusal ?? last?.error ?? 'no answer'}' after ${bomb.tries.length} hello(s); target RSS +${mib(growth)}`,
      );
    }
    await bystander.stop();
    const silence = bystander.longestSilenceMs('B');
    check(
      "the target's other VM kept beating through the bombs",
      bystander.runningAt(1_000).includes('B') && silence <= BYSTANDER_SILENCE_BOUND_MS,
      `longest silence ${silence} ms (bound ${BYSTANDER_SILENCE_BOUND_MS} ms)`,
    );

    const r2 = await handoff2;
    await sleep(SETTLE_MS);
    await moved2.stop();
    const alongside2 = handoffFigure(r2, moved2);
    check('handoff alongside the flood and the bombs', alongside2.ok, alongside2.figure);
    const linger = await lingering;
    const committedAt = r2?.steps.find((s) => s.step === 'stream')?.endedAt;
    const late = (await attack('late', { handoffId: h2 })) as HelloOutcome;
    const lingerSecs = (t: number | undefined) => (t === undefined || linger.helloAt === undefined ? '?' : `+${((t - linger.helloAt) / 1000).toFixed(1)} s`);
    check(
      'a connection for a handoff cannot write after its commit',
      linger.closed && linger.closedAt !== undefined && committedAt !== undefined && linger.closedAt < committedAt && late.refusal === NOT_EXPECTED && late.frames.length === 1,
      `a connection taken as the source's newest attempt (after ${linger.hellos} hello(s)) was closed ${linger.closed ? `at ${lingerSecs(linger.closedAt)}` : 'never'} ('${linger.refusal ?? linger.error ?? 'no word'}'), ` +
        `the commit came at ${lingerSecs(committedAt)}; a hello and batch after it: '${late.refusal ?? late.error ?? 'no answer'}'`,
    );

    // 3. What the two handoffs left in history.
    const histories = await Promise.all(['handoff-sec-marked', 'handoff-sec-busy'].map(async (id) => {
      const h = await cluster.client.workflow.getHandle(id).fetchHistory();
      return Buffer.from(proto.temporal.api.history.v1.History.encode(h).finish()).toString('latin1');
    }));
    const secrets = keys.texts.filter((t) => histories.some((h) => h.includes(t))).length;
    const words = histories.flatMap((h) => [...h.matchAll(/PRIVATE KEY|"(?:token|secret|password)"/gi)].map((m) => m[0]));
    const markerInHistory = histories.some((h) => h.includes(marker));
    const readsHistory = histories.every((h) => h.includes('negotiateBaseImage') && h.includes('streamOverlay'));
    check(
      'the histories hold no key material, token or guest secret',
      secrets === 0 && words.length === 0 && !markerInHistory && readsHistory,
      `${histories.length} histories, ${kb(histories.reduce((n, h) => n + h.length, 0))}: ${secrets} of ${keys.texts.length} key strings, ${words.length} secret-named fields${words.length ? ` (${words.join(', ')})` : ''}, marker ${markerInHistory ? 'FOUND' : 'absent'}`,
    );
  } finally {
    // Wherever each ended up: a handoff moves it to B, a failed one leaves it where it was launched.
    for (const vm of vms) {
      for (const cloudlet of new Set(['B', vm.cloudlet])) await executeWorkflow(cluster.client, destroyVm, { vmId: vm.vmId, cloudlet }).catch(() => undefined);
    }
  }
  return checks;
}

/** What the attacker's helloWith saw (as JSON: only the frames' count is read). */
type HelloOutcome = Awaited<ReturnType<typeof helloWith>>;
interface FloodOutcome {
  connections: Array<{ kind: string; up: boolean; lifetimeMs: number | null; error?: string }>;
}
interface BombOutcome {
  wireBytes: number;
  inflatesTo: number;
  declared: number;
  tries: Array<{ attempt: number; refusal?: string; error?: string }>;
}

const mb = (n: number) => `${(n / 1e6).toFixed(1)} MB`;
const mib = (n: number) => `${(n / MiB).toFixed(1)} MiB`;
const kb = (n: number) => `${(n / 1024).toFixed(0)} KiB`;

function handoffFigure(r: HandoffResult | undefined, monitor: CopyMonitor): { ok: boolean; figure: string } {
  if (!r) return { ok: false, figure: 'the handoff failed' };
  const runsAt = monitor.runningAt(SETTLE_MS / 2);
  const ok = r.verified && r.guestContinued && monitor.copiesSeenRunning === 1 && runsAt.length === 1 && runsAt[0] === 'B';
  return { ok, figure: `verified ${r.verified}, guest went on ${r.guestContinued}, ${(r.totalMs / 1000).toFixed(1)} s, downtime ${r.downtimeMs} ms; running at ${runsAt.join(', ') || 'nowhere'}, most copies at once ${monitor.copiesSeenRunning}` };
}

/** The handoff's result, or undefined if it failed (the check that reads it says so). */
async function settled(p: Promise<HandoffResult>): Promise<HandoffResult | undefined> {
  return p.catch(() => undefined);
}

async function stepOf(client: Client, workflowId: string): Promise<HandoffStep | 'unknown'> {
  return client.workflow.getHandle(workflowId).query(progressQuery).then((p) => p.step, () => 'unknown' as const);
}

/** Waits until the handoff streams (the target has prepared) and the source has connected; returns its handoff id. */
async function streaming(client: Client, workflowId: string): Promise<string> {
  const deadline = Date.now() + 120_000;
  for (;;) {
    const step = await stepOf(client, workflowId);
    if (step !== 'unknown' && HANDOFF_STEPS.indexOf(step as (typeof HANDOFF_STEPS)[number]) >= HANDOFF_STEPS.indexOf('stream')) break;
    if (Date.now() > deadline) throw new Error(`${workflowId} did not reach its stream step within 120 s (at '${step}')`);
    await sleep(100);
  }
  await sleep(1_500);
  const { runId } = await client.workflow.getHandle(workflowId).describe();
  return `${workflowId}/${runId}`;
}

/** How often `text` occurs in the RAM file of `dir` whose name starts with `prefix` (read in slices). */
async function occurrencesInRam(dir: string, prefix: string, text: string): Promise<number> {
  const name = (await readdir(dir)).find((n) => n.startsWith(prefix) && n.endsWith('.ram'));
  if (!name) return 0;
  const needle = Buffer.from(text);
  let count = 0;
  let carry = Buffer.alloc(0);
  for await (const slice of createReadStream(join(dir, name), { highWaterMark: 16 * MiB }) as AsyncIterable<Buffer>) {
    const window = Buffer.concat([carry, slice]);
    for (let at = window.indexOf(needle); at >= 0; at = window.indexOf(needle, at + 1)) count++;
    // The tail that may begin a match split across slices (shorter than the needle: no match counted twice).
    carry = window.subarray(window.length - (needle.length - 1));
  }
  return count;
}

/** The marker the guest drew, from its console log on the cloudlet that runs it. */
async function markerOf(serialLog: string): Promise<string> {
  for (let k = 0; k < 600; k++) {
    const m = /EHOFF-MARKER (EHOFF-MARKER-[0-9a-f]{32})/.exec(await readFile(serialLog, 'latin1').catch(() => ''));
    if (m) return m[1]!;
    await sleep(100);
  }
  throw new Error(`no marker in ${serialLog} within 60 s`);
}


/** Runs one attacker command in namespace `ns`; its last line of output is what it saw. */
async function attackFrom(ns: string, command: string, args: object): Promise<unknown> {
  const { stdout } = await run('ip', ['netns', 'exec', ns, process.execPath, '--import', 'tsx', join(REPO_ROOT, 'test', 'security', 'attacker.ts'), command, JSON.stringify(args)], {
    cwd: REPO_ROOT,
    maxBuffer: 16 * MiB,
  }).catch((err: { stderr?: string; message: string }) => {
    throw new Error(`attacker ${command} failed: ${err.stderr?.trim() || err.message}`);
  });
  return JSON.parse(stdout.trim().split('\n').at(-1)!);
}

