/**
 * A real Temporal cluster on this machine: the server built from the Go module proxy
 * (go.temporal.io/server, versions.env), on a private PostgreSQL from Debian, as N server nodes
 * (default two) that find each other through the database and gossip membership (ringpop), each
 * node running every service (frontend, history, matching, worker); a TCP balancer over the
 * frontends (the one address clients dial); and the Temporal UI server. All on 127.0.0.1, ports
 * from layout.ts (default: balancer 17233, node-a 17333, node-b 17433, UI 17280, PostgreSQL 17232).
 * Everything runs detached and survives the caller; state is in `.state/cluster` (EHOFF_STATE_DIR).
 *
 * API (for `npm run cluster` and the scale-out tests):
 *   clusterUp(opts?: ClusterUpOptions): Promise<ClusterInfo>
 *       starts what is not running (adopting what is, sweeping stale PID files), creates the
 *       databases and schema, registers the namespaces and the project's search attributes, and
 *       returns once every frontend answers and every node is in every ring.
 *   clusterDown(opts?: { stateDir?, purge? }): Promise<string[]>     stops all it recorded; `purge` also deletes the state
 *   clusterStatus(opts?: { stateDir? }): Promise<ClusterStatus>       what runs, what serves, the membership rings
 *   killNode(name, signal = 'SIGKILL', opts?): Promise<number>        signals one server node (by its recorded PID), waits until it is gone
 *   startNode(name, opts?): Promise<NodeInfo>                        starts one node again, returns when it serves and is in the rings
 *   waitMembership(nodeNames, opts?): Promise<Rings>                  until exactly those nodes are in every ring (e.g. after a kill)
 *   clusterConnectionOptions(info): Promise<ConnectionOptions>       for @temporalio/client / worker NativeConnection (TLS included)
 *
 * TLS (`tls: true`): the frontends serve gRPC with mutual TLS, certificate from the site CA
 * (cluster-tls.ts); clients present any certificate that CA issued (a cloudlet's will do).
 */
import { access, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Connection, type ConnectionOptions } from '@temporalio/client';
import proto from '@temporalio/proto';
import { EDGE_SEARCH_ATTRIBUTES } from '../../workflows/definitions.js';
import { REPO_ROOT } from '../paths.js';
import { portIsFree } from '../temporal-dev-server.js';
import { connectionOptions, frontendAnswers, membership, temporalCli, waitFrontend, type Rings, type Target } from './admin.js';
import { ensureClusterTls, type ClusterTlsFiles } from './cluster-tls.js';
import { CLUSTER_STATE_DIR, HOST, SERVICES, clusterLayout, clusterPorts, type ClusterLayout, type NodeLayout } from './layout.js';
import { ensurePostgres, postgresNeedles, prepareStateDir, stopPostgres } from './postgres.js';
import { livePid, logTail, spawnDaemon, stopDaemon, waitGone } from './processes.js';
import { DATABASES, dynamicConfig, nodeConfig, uiConfig } from './server-config.js';
import { CLUSTER_BINARIES, TEMPORAL_SERVER_VERSION, TEMPORAL_UI_SERVER_VERSION } from './tools.js';

export type { Rings } from './admin.js';
export type { ClusterTlsFiles } from './cluster-tls.js';

export interface ClusterUpOptions {
  stateDir?: string;
  /** First port of the plan in layout.ts (default 17200). */
  basePort?: number;
  /** Server nodes (default 2), named node-a, node-b, … */
  nodeCount?: number;
  /** Frontends with mutual TLS from the site CA (default off: plaintext on loopback). */
  tls?: boolean;
  /** Start the UI server (default on). */
  ui?: boolean;
  /** The server's log level (default warn); logs in `<stateDir>/logs`. */
  logLevel?: 'debug' | 'info' | 'warn' | 'error';
  /** Namespaces to register (default ['default']); each gets the project's search attributes. */
  namespaces?: string[];
  log?: (line: string) => void;
}

/** What `up` wrote down, so that down, status, killNode and startNode need no options. */
interface ClusterRecord {
  basePort: number;
  nodeCount: number;
  tls: boolean;
  ui: boolean;
  logLevel: string;
  namespaces: string[];
  serverVersion: string;
  uiServerVersion: string;
}

export interface NodeInfo {
  name: string;
  pid: number;
  frontendPort: number;
  frontendAddress: string;
}

export interface ClusterInfo {
  /** The balancer: the one address workers and clients should dial (it skips a dead node). */
  address: string;
  /** Each node's own frontend, in node order. */
  frontendAddresses: string[];
  namespaces: string[];
  uiUrl?: string;
  nodes: NodeInfo[];
  balancer: { pid: number; address: string };
  postgres: { pid: number; address: string; user: string; databases: string[]; dataDir: string };
  /** Present when the frontends require mutual TLS: the CA to trust, and the cluster's own client certificate. */
  tls?: ClusterTlsFiles;
  serverVersion: string;
  uiServerVersion: string;
  stateDir: string;
}

export interface ComponentStatus {
  pid?: number;
  address: string;
  serving: boolean;
}

export interface ClusterStatus {
  /** Every component runs and serves, and every node is in every ring. */
  up: boolean;
  stateDir: string;
  tls: boolean;
  postgres: ComponentStatus;
  nodes: Array<ComponentStatus & { name: string }>;
  balancer: ComponentStatus;
  ui?: ComponentStatus;
  /** Each ring as the first serving node sees it (each member by its service's gRPC address). */
  membership?: { seenBy: string; rings: Rings; nodesInRings: string[] };
  serverVersion: string;
  uiServerVersion: string;
}

const nodeNeedles = (n: NodeLayout) => ['ehoff-temporal-server', n.configFile];
const uiNeedles = (l: ClusterLayout) => ['ehoff-temporal-ui', l.ui.configDir];
const balancerNeedles = (l: ClusterLayout) => ['frontend-balancer.ts', `${HOST}:${l.balancer.port}`];

async function readRecord(stateDir: string): Promise<ClusterRecord | undefined> {
  const text = await readFile(join(stateDir, 'cluster.json'), 'utf8').catch(() => undefined);
  return text ? (JSON.parse(text) as ClusterRecord) : undefined;
}

async function recorded(stateDir = CLUSTER_STATE_DIR): Promise<{ record: ClusterRecord; layout: ClusterLayout }> {
  const record = await readRecord(stateDir);
  if (!record) throw new Error(`no cluster recorded in ${stateDir}: run \`npm run cluster -- up\` first`);
  return { record, layout: clusterLayout({ stateDir, basePort: record.basePort, nodeCount: record.nodeCount }) };
}

async function tlsOf(layout: ClusterLayout, record: ClusterRecord): Promise<ClusterTlsFiles | undefined> {
  return record.tls ? ensureClusterTls(layout.tlsDir) : undefined;
}

const nodeTarget = (n: NodeLayout, tls?: ClusterTlsFiles): Target => ({ address: `${HOST}:${n.grpcPorts.frontend}`, tls });

function nodeByName(layout: ClusterLayout, name: string): NodeLayout {
  const n = layout.nodes.find((x) => x.name === name);
  if (!n) throw new Error(`no node '${name}' (the cluster has ${layout.nodes.map((x) => x.name).join(', ')})`);
  return n;
}

async function requireBinaries(ui: boolean): Promise<void> {
  for (const b of [CLUSTER_BINARIES.server, CLUSTER_BINARIES.sqlTool, CLUSTER_BINARIES.tdbg, ...(ui ? [CLUSTER_BINARIES.ui] : [])]) {
    if (!(await access(b).then(() => true, () => false))) throw new Error(`${b} is missing: run bash infra/temporal-cluster/setup-cluster.sh`);
  }
}

/** Fails naming the first port of `owners` that something else holds. */
async function requireFree(layout: ClusterLayout, owners: (owner: string) => boolean): Promise<void> {
  for (const p of clusterPorts(layout).filter((p) => owners(p.owner))) {
    if (!(await portIsFree(p.port, HOST))) throw new Error(`port ${p.port} (${p.owner}) is taken by a process this cluster did not record: free it or pass another basePort`);
  }
}

async function startNodeProcess(layout: ClusterLayout, n: NodeLayout, tls: ClusterTlsFiles | undefined): Promise<NodeInfo> {
  await requireFree(layout, (o) => o.startsWith(`${n.name} `));
  const started = await spawnDaemon({
    command: CLUSTER_BINARIES.server,
    args: ['--config-file', n.configFile, '--allow-no-auth', 'start'],
    logFile: n.logFile,
    pidFile: n.pidFile,
    // No periodic version check call to temporal.io (also off in the dynamic config).
    env: { ...process.env, TEMPORAL_VERSION_CHECK_DISABLED: '1' },
  });
  await waitFrontend(nodeTarget(n, tls), 120_000, async () =>
    started.exited() ? `${n.name} exited during start-up:\n${await logTail(n.logFile)}` : undefined,
  );
  return { name: n.name, pid: started.pid, frontendPort: n.grpcPorts.frontend, frontendAddress: `${HOST}:${n.grpcPorts.frontend}` };
}

/** The nodes present in every ring (a ring member is named by its service's gRPC address). */
function nodesIn(layout: ClusterLayout, rings: Rings): string[] {
  return layout.nodes
    .filter((n) => SERVICES.every((s) => rings[s].includes(`${HOST}:${n.grpcPorts[s]}`)))
    .map((n) => n.name);
}

/**
 * Waits until every ring holds exactly the nodes named, as each of them sees it (after a start,
 * all; after a kill -9, the survivors once ringpop has declared the dead one faulty).
 */
export async function waitMembership(names: string[], opts: { stateDir?: string; timeoutMs?: number } = {}): Promise<Rings> {
  const { record, layout } = await recorded(opts.stateDir);
  const tls = await tlsOf(layout, record);
  const want = [...names].sort().join(',');
  const memberPorts = new Set(layout.nodes.filter((n) => names.includes(n.name)).flatMap((n) => SERVICES.map((s) => `${HOST}:${n.grpcPorts[s]}`)));
  let last = '';
  for (const deadline = Date.now() + (opts.timeoutMs ?? 60_000); ; await sleep(500)) {
    let rings: Rings | undefined;
    let agreed = true;
    for (const name of names) {
      const r = await membership(nodeTarget(nodeByName(layout, name), tls)).catch((e: Error) => ((last = e.message), undefined));
      const exact = r && nodesIn(layout, r).sort().join(',') === want && SERVICES.every((s) => r[s].every((m) => memberPorts.has(m)));
      if (!exact) agreed = false;
      if (r) (rings = r), (last = JSON.stringify(r));
    }
    if (agreed && rings) return rings;
    if (Date.now() > deadline) throw new Error(`membership did not become exactly [${want}] within ${(opts.timeoutMs ?? 60_000) / 1000} s; last seen: ${last}`);
  }
}

async function ensureNamespaces(target: Target, namespaces: string[], log: (l: string) => void): Promise<void> {
  const conn = await Connection.connect(await connectionOptions(target));
  try {
    for (const ns of namespaces) {
      const known = await temporalCli(target, ['operator', 'namespace', 'describe', '--namespace', ns]).then(() => true, () => false);
      if (!known) {
        await temporalCli(target, ['operator', 'namespace', 'create', '--namespace', ns, '--retention', '72h']);
        log(`registered namespace ${ns}`);
      }
      const have = await conn.operatorService.listSearchAttributes({ namespace: ns });
      const missing = EDGE_SEARCH_ATTRIBUTES.filter((a) => !(a.name in (have.customAttributes ?? {})));
      if (missing.length) {
        const IVT = proto.temporal.api.enums.v1.IndexedValueType;
        await conn.operatorService.addSearchAttributes({
          namespace: ns,
          searchAttributes: Object.fromEntries(missing.map((a) => [a.name, IVT[`INDEXED_VALUE_TYPE_${a.type}` as keyof typeof IVT]])),
        });
        log(`registered search attributes on ${ns}: ${missing.map((a) => a.name).join(', ')}`);
      }
    }
  } finally {
    await conn.close();
  }
}

async function waitUi(layout: ClusterLayout, exited: () => boolean): Promise<void> {
  const url = `http://${HOST}:${layout.ui.port}/`;
  for (const deadline = Date.now() + 30_000; ; await sleep(300)) {
    if (exited()) throw new Error(`the UI server exited during start-up:\n${await logTail(layout.ui.logFile)}`);
    if (await fetch(url, { signal: AbortSignal.timeout(2_000) }).then((r) => r.ok, () => false)) return;
    if (Date.now() > deadline) throw new Error(`the UI server did not answer at ${url} within 30 s:\n${await logTail(layout.ui.logFile)}`);
  }
}

/** Brings the cluster up (what already runs is adopted) and returns how to reach it. */
export async function clusterUp(opts: ClusterUpOptions = {}): Promise<ClusterInfo> {
  const log = opts.log ?? (() => undefined);
  const stateDir = opts.stateDir ?? CLUSTER_STATE_DIR;
  const record: ClusterRecord = {
    basePort: opts.basePort ?? clusterLayout().basePort,
    nodeCount: opts.nodeCount ?? 2,
    tls: opts.tls ?? false,
    ui: opts.ui ?? true,
    logLevel: opts.logLevel ?? 'warn',
    namespaces: opts.namespaces ?? ['default'],
    serverVersion: TEMPORAL_SERVER_VERSION,
    uiServerVersion: TEMPORAL_UI_SERVER_VERSION,
  };
  const layout = clusterLayout({ stateDir, basePort: record.basePort, nodeCount: record.nodeCount });
  await requireBinaries(record.ui);
  await prepareStateDir(stateDir);

  // A cluster that runs with another shape is not reshaped under its users: down first.
  const before = await readRecord(stateDir);
  if (before) {
    const old = clusterLayout({ stateDir, basePort: before.basePort, nodeCount: before.nodeCount });
    const running = await runningParts(old);
    const same = (['basePort', 'nodeCount', 'tls', 'ui', 'serverVersion', 'uiServerVersion'] as const).every((k) => before[k] === record[k]);
    if (running.length && !same) {
      throw new Error(`the cluster runs (${running.join(', ')}) with ${JSON.stringify(before)}; run \`npm run cluster -- down\` before starting it as ${JSON.stringify(record)}`);
    }
  }
  await writeFile(layout.recordFile, `${JSON.stringify(record, null, 2)}\n`);

  const tls = await tlsOf(layout, record);
  const pg = await ensurePostgres(layout);
  log(`postgres: pid ${pg.pid} on ${HOST}:${pg.port}, databases ${DATABASES.default}, ${DATABASES.visibility} at the schema of server ${TEMPORAL_SERVER_VERSION}`);

  await writeFile(layout.dynamicConfigFile, JSON.stringify(dynamicConfig(), null, 2));
  const nodes: NodeInfo[] = [];
  const toStart: NodeLayout[] = [];
  for (const n of layout.nodes) {
    await writeFile(n.configFile, JSON.stringify(nodeConfig(layout, n, pg, tls, record.logLevel), null, 2), { mode: 0o600 });
    const pid = await livePid(n.pidFile, nodeNeedles(n));
    if (pid) {
      log(`${n.name}: running (pid ${pid})`);
      nodes.push({ name: n.name, pid, frontendPort: n.grpcPorts.frontend, frontendAddress: `${HOST}:${n.grpcPorts.frontend}` });
    } else toStart.push(n);
  }
  // On a fresh database one node first: it writes the cluster's metadata; the others then join.
  if (nodes.length === 0 && toStart.length) {
    const first = toStart.shift()!;
    const t = Date.now();
    nodes.push(await startNodeProcess(layout, first, tls));
    log(`${first.name}: serving at ${nodes[0]!.frontendAddress} (${((Date.now() - t) / 1000).toFixed(1)} s)`);
  }
  const t = Date.now();
  for (const info of await Promise.all(toStart.map((n) => startNodeProcess(layout, n, tls)))) {
    nodes.push(info);
    log(`${info.name}: serving at ${info.frontendAddress} (${((Date.now() - t) / 1000).toFixed(1)} s)`);
  }
  nodes.sort((a, b) => a.name.localeCompare(b.name));

  let balancerPid = await livePid(layout.balancer.pidFile, balancerNeedles(layout));
  if (!balancerPid) {
    await requireFree(layout, (o) => o === 'balancer');
    const b = await spawnDaemon({
      command: process.execPath,
      args: ['--import', 'tsx', join(REPO_ROOT, 'infra', 'temporal-cluster', 'frontend-balancer.ts'), '--name', 'ehoff-frontend-balancer',
        '--listen', `${HOST}:${layout.balancer.port}`, ...layout.nodes.flatMap((n) => ['--backend', `${HOST}:${n.grpcPorts.frontend}`])],
      cwd: REPO_ROOT,
      logFile: layout.balancer.logFile,
      pidFile: layout.balancer.pidFile,
    });
    balancerPid = b.pid;
    await waitFrontend({ address: `${HOST}:${layout.balancer.port}`, tls }, 30_000, async () =>
      b.exited() ? `the frontend balancer exited:\n${await logTail(layout.balancer.logFile)}` : undefined,
    );
  }
  const address = `${HOST}:${layout.balancer.port}`;
  log(`balancer: pid ${balancerPid} at ${address}`);

  const t2 = Date.now();
  await waitMembership(layout.nodes.map((n) => n.name), { stateDir });
  log(`membership: every node in every ring (${((Date.now() - t2) / 1000).toFixed(1)} s)`);
  await ensureNamespaces({ address, tls }, record.namespaces, log);
  // Each frontend must know the namespaces before a client is told the cluster is up.
  // A namespace just registered reaches the other frontends' caches within their refresh (~10 s).
  for (const n of layout.nodes) {
    for (const ns of record.namespaces) {
      for (const deadline = Date.now() + 60_000; ; await sleep(1_000)) {
        const known = await temporalCli(nodeTarget(n, tls), ['workflow', 'list', '--namespace', ns, '--limit', '1']).then(() => undefined, (e: Error) => e);
        if (!known) break;
        if (Date.now() > deadline) throw known;
      }
    }
  }

  let uiUrl: string | undefined;
  if (record.ui) {
    await mkdir(layout.ui.configDir, { recursive: true });
    await writeFile(join(layout.ui.configDir, 'ehoff.yaml'), JSON.stringify(uiConfig(layout, tls), null, 2));
    if (!(await livePid(layout.ui.pidFile, uiNeedles(layout)))) {
      await requireFree(layout, (o) => o === 'ui');
      const ui = await spawnDaemon({
        command: CLUSTER_BINARIES.ui,
        args: ['--root', layout.ui.configDir, '--config', '.', '--env', 'ehoff', 'start'],
        logFile: layout.ui.logFile,
        pidFile: layout.ui.pidFile,
      });
      await waitUi(layout, ui.exited);
    }
    uiUrl = `http://${HOST}:${layout.ui.port}`;
    log(`ui: ${uiUrl}`);
  }

  return {
    address,
    frontendAddresses: nodes.map((n) => n.frontendAddress),
    namespaces: record.namespaces,
    uiUrl,
    nodes,
    balancer: { pid: balancerPid, address },
    postgres: { pid: pg.pid, address: `${HOST}:${pg.port}`, user: pg.user, databases: [DATABASES.default, DATABASES.visibility], dataDir: layout.postgres.dataDir },
    tls,
    serverVersion: TEMPORAL_SERVER_VERSION,
    uiServerVersion: TEMPORAL_UI_SERVER_VERSION,
    stateDir,
  };
}

/** The running parts, by their recorded PIDs (stale PID files are removed on the way). */
async function runningParts(layout: ClusterLayout): Promise<string[]> {
  const parts: string[] = [];
  if (await livePid(layout.ui.pidFile, uiNeedles(layout))) parts.push('ui');
  if (await livePid(layout.balancer.pidFile, balancerNeedles(layout))) parts.push('balancer');
  for (const n of layout.nodes) if (await livePid(n.pidFile, nodeNeedles(n))) parts.push(n.name);
  if (await livePid(layout.postgres.pidFile, postgresNeedles(layout))) parts.push('postgres');
  return parts;
}

/**
 * Stops everything the cluster recorded, each by its PID after checking its command line:
 * UI, balancer, nodes (SIGTERM, SIGKILL after 20 s), PostgreSQL (fast shutdown). Then checks
 * that none of its ports is still open. `purge` also deletes the state (database included).
 */
export async function clusterDown(opts: { stateDir?: string; purge?: boolean; log?: (l: string) => void } = {}): Promise<string[]> {
  const stateDir = opts.stateDir ?? CLUSTER_STATE_DIR;
  const log = opts.log ?? (() => undefined);
  const record = await readRecord(stateDir);
  const stopped: string[] = [];
  if (record) {
    const layout = clusterLayout({ stateDir, basePort: record.basePort, nodeCount: record.nodeCount });
    const note = (what: string) => (pid: number | undefined) => {
      if (pid !== undefined) stopped.push(`${what} (pid ${pid})`), log(`stopped ${what} (pid ${pid})`);
    };
    note('ui')(await stopDaemon(layout.ui.pidFile, uiNeedles(layout), 'SIGTERM', 10_000));
    note('balancer')(await stopDaemon(layout.balancer.pidFile, balancerNeedles(layout), 'SIGTERM', 5_000));
    await Promise.all(layout.nodes.map(async (n) => note(n.name)(await stopDaemon(n.pidFile, nodeNeedles(n), 'SIGTERM', 20_000))));
    note('postgres')(await stopPostgres(layout));
    const open: string[] = [];
    for (const p of clusterPorts(layout)) if (!(await portIsFree(p.port, HOST))) open.push(`${p.port} (${p.owner})`);
    if (open.length) throw new Error(`after down, ports still listen: ${open.join(', ')}`);
  }
  if (opts.purge) {
    await rm(stateDir, { recursive: true, force: true });
    log(`removed ${stateDir}`);
  }
  return stopped;
}

/** What runs and serves, and the membership as the first serving node sees it. */
export async function clusterStatus(opts: { stateDir?: string } = {}): Promise<ClusterStatus> {
  const stateDir = opts.stateDir ?? CLUSTER_STATE_DIR;
  const record = await readRecord(stateDir);
  const layout = clusterLayout({ stateDir, basePort: record?.basePort, nodeCount: record?.nodeCount });
  const tls = record ? await tlsOf(layout, record) : undefined;
  const pgPid = await livePid(layout.postgres.pidFile, postgresNeedles(layout));
  const postgres = { pid: pgPid, address: `${HOST}:${layout.postgres.port}`, serving: pgPid !== undefined && !(await portIsFree(layout.postgres.port, HOST)) };
  const nodes = await Promise.all(
    layout.nodes.map(async (n) => {
      const pid = await livePid(n.pidFile, nodeNeedles(n));
      return { name: n.name, pid, address: `${HOST}:${n.grpcPorts.frontend}`, serving: pid !== undefined && (await frontendAnswers(nodeTarget(n, tls))) };
    }),
  );
  const bPid = await livePid(layout.balancer.pidFile, balancerNeedles(layout));
  const balancer = { pid: bPid, address: `${HOST}:${layout.balancer.port}`, serving: bPid !== undefined && (await frontendAnswers({ address: `${HOST}:${layout.balancer.port}`, tls })) };
  let ui: ComponentStatus | undefined;
  if (record?.ui ?? true) {
    const pid = await livePid(layout.ui.pidFile, uiNeedles(layout));
    const url = `http://${HOST}:${layout.ui.port}`;
    ui = { pid, address: url, serving: pid !== undefined && (await fetch(url, { signal: AbortSignal.timeout(2_000) }).then((r) => r.ok, () => false)) };
  }
  let seen: ClusterStatus['membership'];
  const firstServing = layout.nodes.find((_, i) => nodes[i]!.serving);
  if (firstServing) {
    const rings = await membership(nodeTarget(firstServing, tls)).catch(() => undefined);
    if (rings) seen = { seenBy: firstServing.name, rings, nodesInRings: nodesIn(layout, rings) };
  }
  const up =
    postgres.serving && balancer.serving && (ui?.serving ?? true) && nodes.every((n) => n.serving) && seen?.nodesInRings.length === layout.nodes.length;
  return { up, stateDir, tls: record?.tls ?? false, postgres, nodes, balancer, ui, membership: seen, serverVersion: TEMPORAL_SERVER_VERSION, uiServerVersion: TEMPORAL_UI_SERVER_VERSION };
}

/**
 * Sends `signal` (default SIGKILL, a node lost) to one server node by its recorded PID, and
 * waits until the process is gone. Returns the PID. The other nodes notice through ringpop.
 */
export async function killNode(name: string, signal: NodeJS.Signals = 'SIGKILL', opts: { stateDir?: string } = {}): Promise<number> {
  const { layout } = await recorded(opts.stateDir);
  const n = nodeByName(layout, name);
  const pid = await livePid(n.pidFile, nodeNeedles(n));
  if (pid === undefined) throw new Error(`${name} does not run (no live PID in ${n.pidFile})`);
  process.kill(pid, signal);
  if (!(await waitGone(pid, signal === 'SIGKILL' ? 10_000 : 30_000))) throw new Error(`${name} (pid ${pid}) still runs ${signal === 'SIGKILL' ? 10 : 30} s after ${signal}`);
  await rm(n.pidFile, { force: true });
  return pid;
}

/** Starts one node again (config as `up` wrote it); returns once it serves and every running node is in every ring. */
export async function startNode(name: string, opts: { stateDir?: string; waitForMembership?: boolean } = {}): Promise<NodeInfo> {
  const { record, layout } = await recorded(opts.stateDir);
  const n = nodeByName(layout, name);
  const running = await livePid(n.pidFile, nodeNeedles(n));
  if (running) throw new Error(`${name} already runs (pid ${running})`);
  const info = await startNodeProcess(layout, n, await tlsOf(layout, record));
  if (opts.waitForMembership ?? true) {
    const live: string[] = [];
    for (const m of layout.nodes) if (await livePid(m.pidFile, nodeNeedles(m))) live.push(m.name);
    await waitMembership(live, { stateDir: layout.stateDir });
  }
  return info;
}

/** Connection options for the SDK (client or worker) to the cluster's balancer, with its TLS if any. */
export async function clusterConnectionOptions(info: Pick<ClusterInfo, 'address' | 'tls'>): Promise<ConnectionOptions> {
  return connectionOptions({ address: info.address, tls: info.tls });
}
