import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { Client } from '@temporalio/client';
import { connectTo, temporalTarget, type TemporalTarget } from './temporal-connection.js';
import { READY_MARKER } from '../workers/cloudlet-worker.js';
import { sweepRunFolder } from '../engine/host/vm-folder-sweep.js';
import { clusterRecord, processStartTicks, sweepCrashedCluster, sweepDeadClusters, type ClusterRecord } from './cluster-record.js';
import { DEV_PKI_DIR, PREFIX, REPO_ROOT } from './paths.js';
import { ensureDevPki } from './dev-pki.js';
import type { CloudletTlsFiles } from '../engine/wire/cloudlet-tls.js';
import { freePort, portIsFree, startDevServer, type DevServer } from './temporal-dev-server.js';
import { createWanTestbed, type WanTestbed } from './wan-testbed.js';
import { relayTemporalIntoWan } from './wan-temporal-relay.js';
import { ensureWorkflowBundle } from './workflow-bundle.js';

export interface CloudletSpec {
  name: string;
  /** Built base-image folders this cloudlet's cache receives before its worker polls. */
  baseImages: string[];
  imageCacheDir: string;
  /** A tmpfs folder for this cloudlet's RAM files, if not /dev/shm. */
  ramDir?: string;
  /** Its certificate, key and site CA; by default issued from the development CA in `.state/pki`. */
  tls?: CloudletTlsFiles;
}

export interface EmbeddedCluster {
  address: string;
  /** How its Temporal is reached: the embedded server plainly, another by the profile and TEMPORAL_* variables. */
  temporal: TemporalTarget;
  /** The shaped WAN the cloudlets sit on, when one was asked for. */
  wan?: WanTestbed;
  uiUrl?: string;
  client: Client;
  workers: Map<string, SupervisedWorker>;
  /**
   * Stops the embedded dev server, waits `downMs`, and starts it again on the same database,
   * address and port (a fault test's Temporal outage). Histories survive it.
   */
  restartServer(downMs: number): Promise<void>;
  stop(): Promise<void>;
}

export interface ClusterOptions {
  cloudlets: CloudletSpec[];
  /**
   * Run an embedded dev server with this database file; omit to use the Temporal that the
   * temporal.toml profile and TEMPORAL_* variables name (TLS and API key included).
   */
  devServer?: { dbFile: string; preferredPort?: number; preferredUiPort?: number };
  runTag: string;
  /**
   * Put each cloudlet (and the server) in its own network namespace behind a shaped link, with
   * `rttMs` of round trip between cloudlets (see WanTestbed).
   */
  wan?: { mbps: number; rttMs?: number };
  /**
   * With `wan` and no `devServer`: the Temporal that the profile names runs on the host (a
   * cluster's balancer), so relay it into the testbed's core namespace, where the workers dial it
   * on its own port as they dial the embedded server (wan-temporal-relay.ts). With TLS, the name
   * the workers verify comes from TEMPORAL_TLS_SERVER_NAME.
   */
  relayTemporalIntoWan?: boolean;
  /** How long after a worker dies it is started again (systemd's RestartSec); default 1 s. */
  workerRestartDelayMs?: number;
  log?: (line: string) => void;
  /** Each line a worker logs (JSON lines on its stderr); dropped unless EHOFF_VERBOSE if not given. */
  workerLog?: (line: string) => void;
}

/**
 * The embedded default: a Temporal dev server and one worker process per cloudlet on this host.
 * Everything it starts it stops, by PID, and the per-run folders it made it removes.
 */
export async function startEmbeddedCluster(opts: ClusterOptions): Promise<EmbeddedCluster> {
  const log = opts.log ?? (() => undefined);
  const cleanups: Array<() => Promise<void>> = [];
  const stop = async () => {
    for (const c of cleanups.reverse()) {
      const t = Date.now();
      await c().catch((e) => log(`cleanup: ${(e as Error).message}`));
      if (process.env.EHOFF_VERBOSE) log(`cleanup step took ${Date.now() - t} ms`);
    }
  };
  try {
    // What a crashed run with this tag left goes first; then this run keeps its own record.
    for (const r of await sweepCrashedCluster(opts.runTag)) log(`swept from a crashed run: ${r}`);
    for (const r of await sweepDeadClusters()) log(`swept from a crashed run: ${r}`);
    const record: ClusterRecord = {
      runTag: opts.runTag,
      owner: { pid: process.pid, startTicks: (await processStartTicks(process.pid)) ?? '' },
      server: null,
      workers: {},
      namespaces: [],
      hostLinks: [],
      relayPids: [],
    };
    const recordFile = clusterRecord(opts.runTag);
    const saveRecord = () => recordFile.write(record).catch((e: Error) => log(`cannot write the cluster record: ${e.message}`));
    await saveRecord();
    cleanups.push(() => recordFile.remove());
    let server: DevServer | undefined;
    let serverOptions: Parameters<typeof startDevServer>[0] | undefined;
    let temporal = temporalTarget();
    let address = temporal.address;
    let wan: WanTestbed | undefined;
    if (opts.wan) {
      const tag = (process.pid % 46656).toString(36).padStart(3, '0') + Math.floor(Math.random() * 36).toString(36);
      wan = await createWanTestbed({ tag, cloudlets: opts.cloudlets.map((c) => c.name), mbps: opts.wan.mbps, rttMs: opts.wan.rttMs });
      cleanups.push(() => wan!.destroy());
      Object.assign(record, wan.leftovers());
      await saveRecord();
      const delay = wan.rttMs > 0 ? `${wan.rttMs} ms round trip between cloudlets (delay relay)` : 'no added delay';
      log(`WAN testbed ${tag}: ${opts.cloudlets.map((c) => `${c.name} ${wan!.cloudlet(c.name).address}`).join(', ')}, links shaped to ${opts.wan.mbps} Mbit/s (tbf, both ends; ${delay})`);
      if (!opts.devServer && !opts.relayTemporalIntoWan) throw new Error('a WAN testbed needs the embedded dev server (it runs in the core namespace), or relayTemporalIntoWan');
      if (!opts.devServer) {
        const relay = await relayTemporalIntoWan(wan, address, Number(address.split(':')[1]));
        cleanups.push(() => relay.stop());
        log(`Temporal at ${address} relayed into ${wan.coreNs} (pid ${relay.pid}): workers dial <core>:${address.split(':')[1]}`);
      }
    }
    if (opts.devServer) {
      const inCore = wan !== undefined;
      const port = inCore ? 7233 : opts.devServer.preferredPort && (await portIsFree(opts.devServer.preferredPort)) ? opts.devServer.preferredPort : await freePort();
      const uiPort = inCore ? 8233 : opts.devServer.preferredUiPort && (await portIsFree(opts.devServer.preferredUiPort)) ? opts.devServer.preferredUiPort : await freePort();
      log(`starting Temporal dev server on ${port} (UI ${uiPort}, database ${opts.devServer.dbFile})`);
      serverOptions = {
        dbFile: opts.devServer.dbFile,
        port,
        uiPort,
        ...(wan ? { ip: '0.0.0.0', netns: { name: wan.coreNs, addressFromHost: wan.coreAddressFromHost } } : {}),
      };
      server = await startDevServer(serverOptions);
      cleanups.push(() => server!.stop());
      record.server = { pid: server.pid, dbFile: serverOptions.dbFile };
      await saveRecord();
      address = server.address;
      temporal = temporalTarget({ address, namespace: 'default', plain: true });
    }
    const plain = opts.devServer !== undefined;
    const bundle = await ensureWorkflowBundle();
    // The data plane speaks mutual TLS only: a cloudlet given no certificate gets one from the
    // development site CA, made on first use and kept for later runs.
    const devPki = await ensureDevPki(DEV_PKI_DIR, opts.cloudlets.filter((c) => !c.tls).map((c) => c.name));
    const withTls = opts.cloudlets.map((c) => ({ ...c, tls: c.tls ?? devPki[c.name]! }));
    const workers = new Map<string, SupervisedWorker>();
    // Workers stop together, before the server they talk to; then their VMs are ended (a
    // worker's stop leaves its VMs running, as on a real site) and their folders removed.
    cleanups.push(async () => {
      await Promise.all([...workers.values()].map(async (w) => {
        await w.stop();
        await sweepRunFolder(w.runDir);
        await rm(w.runDir, { recursive: true, force: true });
      }));
    });
    await Promise.all(
      withTls.map(async (c) => {
        const runDir = `/tmp/${PREFIX}-${opts.runTag}-${c.name}`;
        // A crashed run with this tag left VMs, mounts and files here: end them first.
        for (const r of await sweepRunFolder(runDir)) log(`swept from a crashed run: ${r}`);
        await rm(runDir, { recursive: true, force: true });
        await mkdir(c.imageCacheDir, { recursive: true });
        // A fixed data-plane port, so that a restarted worker is found where sources expect it.
        const placement = wan
          ? { netns: wan.cloudlet(c.name).ns, dataHost: wan.cloudlet(c.name).address, dataPort: DATA_PORT_IN_NAMESPACE, temporalAddress: `${wan.cloudlet(c.name).coreAddress}:${address.split(':')[1]}`, namespace: temporal.namespace, temporalPlain: plain }
          : { dataHost: '127.0.0.1', dataPort: await freePort(), temporalAddress: address, namespace: temporal.namespace, temporalPlain: plain };
        const w = new SupervisedWorker(c, runDir, placement, bundle, opts.workerRestartDelayMs ?? 1_000, log, (pid) => {
          record.workers[c.name] = { pid, runDir };
          void saveRecord();
        }, opts.workerLog);
        workers.set(c.name, w);
        await w.start();
      }),
    );
    const connection = await connectTo(temporal);
    cleanups.push(() => connection.close());
    const client = new Client({ connection, namespace: temporal.namespace });
    const restartServer = async (downMs: number) => {
      if (!server || !serverOptions) throw new Error('this cluster runs no embedded dev server to restart');
      await server.stop();
      log(`Temporal dev server stopped; starting it again in ${downMs} ms`);
      await new Promise((r) => setTimeout(r, downMs));
      server = await startDevServer(serverOptions);
      record.server = { pid: server.pid, dbFile: serverOptions.dbFile };
      await saveRecord();
      log(`Temporal dev server is back (pid ${server.pid})`);
    };
    return { address, temporal, uiUrl: server?.uiUrl, client, workers, restartServer, stop, ...(wan ? { wan } : {}) };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** Each cloudlet has its own address inside the WAN testbed: the same port serves for all. */
const DATA_PORT_IN_NAMESPACE = 7300;

/** Where a worker runs and how it reaches Temporal (`temporalPlain`: the embedded server, no profile or TEMPORAL_* read). */
type Placement = { netns?: string; dataHost: string; dataPort: number; temporalAddress: string; namespace: string; temporalPlain: boolean };

/**
 * One cloudlet's worker process, started again whenever it dies (systemd's Restart=always; see
 * infra/systemd/), with the same run folder, so the new worker re-adopts the VMs the old left.
 */
export class SupervisedWorker {
  pid = 0;
  dataPlane: { host: string; port: number } = { host: '', port: 0 };
  /** How many times the worker was started again after it died. */
  restarts = 0;
  private child?: ChildProcess;
  private stopping = false;
  private restartTimer?: NodeJS.Timeout;
  private readonly readyWaiters: Array<() => void> = [];

  constructor(
    readonly spec: CloudletSpec,
    readonly runDir: string,
    private readonly placement: Placement,
    private readonly bundle: string,
    private readonly restartDelayMs: number,
    private readonly log: (l: string) => void,
    /** Told each new worker's PID as soon as it is spawned (the cluster's record of what to sweep). */
    private readonly spawned: (pid: number) => void = () => undefined,
    private readonly workerLog?: (line: string) => void,
  ) {}

  /** Starts the worker and waits until it polls. */
  async start(): Promise<void> {
    const { child, ready } = spawnWorker(this.spec, this.runDir, this.placement, this.bundle, this.log, this.workerLog);
    this.child = child;
    if (child.pid !== undefined) this.spawned(child.pid);
    child.once('exit', (code, signal) => {
      if (this.stopping || this.child !== child) return;
      this.log(`cloudlet ${this.spec.name}: worker pid ${child.pid} died (code ${code}, signal ${signal}); starting it again in ${this.restartDelayMs} ms`);
      this.restartTimer = setTimeout(() => {
        this.restarts++;
        this.start().catch((err: Error) => this.log(`cloudlet ${this.spec.name}: restart failed: ${err.message}`));
      }, this.restartDelayMs);
    });
    const r = await ready;
    this.pid = child.pid!;
    this.dataPlane = r.dataPlane;
    for (const w of this.readyWaiters.splice(0)) w();
  }

  /** Resolves once a worker started after now is ready (a restart's end). */
  nextReady(): Promise<void> {
    return new Promise((resolve) => this.readyWaiters.push(resolve));
  }

  /** Sends `signal` to the current worker process (a fault test's crash or stop). */
  signal(signal: NodeJS.Signals): void {
    this.child?.kill(signal);
  }

  /** Stops supervising, then stops the worker (SIGTERM, SIGKILL after 30 s). Its VMs stay. */
  async stop(): Promise<void> {
    this.stopping = true;
    clearTimeout(this.restartTimer);
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGTERM');
    const gone = await Promise.race([exited.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 30_000))]);
    if (!gone) {
      child.kill('SIGKILL');
      await exited;
    }
  }
}

function spawnWorker(
  c: CloudletSpec,
  runDir: string,
  placement: Placement,
  bundle: string,
  log: (l: string) => void,
  workerLog?: (l: string) => void,
): { child: ChildProcess; ready: Promise<{ dataPlane: { host: string; port: number } }> } {
  const args = [
    '--import', 'tsx',
    join(REPO_ROOT, 'workers', 'cloudlet-worker.ts'),
    '--cloudlet', c.name,
    '--run-dir', runDir,
    '--image-cache', c.imageCacheDir,
    ...(c.ramDir ? ['--ram-dir', c.ramDir] : []),
    '--temporal-address', placement.temporalAddress,
    '--namespace', placement.namespace,
    ...(placement.temporalPlain ? ['--temporal-plain'] : []),
    '--data-host', placement.dataHost,
    '--data-port', String(placement.dataPort),
    '--workflow-bundle', bundle,
    ...c.baseImages.flatMap((b) => ['--install-base', b]),
    ...(c.tls ? ['--tls-cert', c.tls.certFile, '--tls-key', c.tls.keyFile, '--tls-ca', c.tls.caFile] : []),
  ];
  // In a namespace, `ip netns exec` execs node in place: the PID is the worker's.
  const child: ChildProcess = placement.netns
    ? spawn('ip', ['netns', 'exec', placement.netns, process.execPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'], cwd: REPO_ROOT })
    : spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], cwd: REPO_ROOT });
  const tail: string[] = [];
  const remember = (l: string) => {
    tail.push(l);
    if (tail.length > 40) tail.shift();
  };
  createInterface({ input: child.stderr! }).on('line', (l) => {
    remember(l);
    if (workerLog) workerLog(l);
    else if (process.env.EHOFF_VERBOSE) log(`[${c.name} stderr] ${l}`);
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const ready = new Promise<{ dataPlane: { host: string; port: number } }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`cloudlet ${c.name} worker not ready within 120 s: ${tail.join('\n')}`)), 120_000);
    createInterface({ input: child.stdout! }).on('line', (l) => {
      remember(l);
      if (l.startsWith(READY_MARKER)) {
        clearTimeout(timer);
        resolve(JSON.parse(l.slice(READY_MARKER.length)));
      } else if (process.env.EHOFF_VERBOSE) log(`[${c.name}] ${l}`);
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`cloudlet ${c.name} worker exited (code ${code}) before it was ready:\n${tail.join('\n')}`));
    });
  })
    .then((r) => {
      log(`cloudlet ${c.name}: worker pid ${child.pid}, data plane ${r.dataPlane.host}:${r.dataPlane.port}`);
      return r;
    })
    .catch((err) => {
      child.kill('SIGKILL');
      throw err;
    });
  return { child, ready };
}
