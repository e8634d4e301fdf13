import { execFile } from 'node:child_process';
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { ensureBaseImage, type BuiltBaseImage } from '../../infra/base-image/build-base-image.js';
import { startEmbeddedCluster, type CloudletSpec, type EmbeddedCluster } from '../../infra/embedded-cluster.js';
import { STATE_DIR } from '../../infra/paths.js';
import { temporalTarget } from '../../infra/temporal-connection.js';
import { clusterDown, clusterUp, type ClusterInfo } from '../../infra/temporal-cluster/cluster.js';
import { drainB, moveChain, nodeKillMidStream, runCase, tlsOnly, type CaseResult, type NodeKillFigures } from './cluster-cases.js';
import { measureThroughput, type ThroughputFigure } from './throughput.js';
import { CLOUDLETS } from './site.js';

const run = promisify(execFile);

/**
 * `npm run test:cluster [-- --json] [--n 6] [--rounds 3] [--throughput-mbps 100] [--loopback]`: the scale-out
 * tests on the two-node Temporal cluster (infra/temporal-cluster) with mutual TLS, every process
 * connected through TEMPORAL_ADDRESS and TEMPORAL_TLS_* (envconfig). Cloudlets A, B and C sit in
 * the WAN testbed's namespaces (10 Mbit/s, 50 ms between cloudlets), reaching the cluster through
 * a relay in the core namespace (infra/wan-temporal-relay.ts); `--loopback` puts them on loopback.
 * Cases: TLS only; a VM moves A → B → C; B drained with two VMs on it; a server node killed -9
 * mid-stream; then N small idle VMs (256 MiB base) moved all at once, `rounds` times, on the
 * cluster, and the same on the embedded dev server (the cluster down by then, the cloudlets on the
 * same testbed, links at --throughput-mbps so the figure is not just the WAN's), handoffs per minute
 * side by side.
 * Progress on stderr; with --json the last stdout line is the report. Exit 0 only if all passed.
 */

const NAMES = {
  tls: 'mTLS only: a plaintext and a certificate-less connection are refused, the envconfig mTLS one accepted',
  chain: 'three cloudlets: a VM moves A → B → C, verified, the guest continuing, running only where it went',
  drain: 'B drained while two VMs run on it: both leave B, each runs in exactly one place',
  nodeKill: 'a Temporal server node killed -9 mid-stream: the handoff completes, verified, the guest continuing',
  throughputCluster: 'throughput on the cluster: N concurrent handoffs of idle VMs, all verified',
  throughputDev: 'throughput on the embedded dev server: N concurrent handoffs of idle VMs, all verified',
  clean: 'everything stopped: no namespace, RAM file, run folder or 17xxx listener left',
} as const;

/** The cluster's own state for this suite, apart from `npm run cluster`'s: made fresh each run. */
const CLUSTER_STATE = join(STATE_DIR, 'ehoff-cluster-test');
const WAN = { mbps: 10, rttMs: 50 };
const TEMPORAL_VARS = ['TEMPORAL_ADDRESS', 'TEMPORAL_NAMESPACE', 'TEMPORAL_TLS_CLIENT_CERT_PATH', 'TEMPORAL_TLS_CLIENT_KEY_PATH', 'TEMPORAL_TLS_SERVER_CA_CERT_PATH', 'TEMPORAL_TLS_SERVER_NAME'];

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      json: { type: 'boolean', default: false },
      n: { type: 'string', default: '6' },
      rounds: { type: 'string', default: '3' },
      'throughput-mbps': { type: 'string', default: '100' },
      loopback: { type: 'boolean', default: false },
    },
  });
  const n = Number(values.n);
  const throughputMbps = Number(values['throughput-mbps']);
  const rounds = Number(values.rounds);
  if (!Number.isInteger(n) || n < 1 || n > 16) throw new Error(`--n ${values.n}: give 1 to 16`);
  if (!Number.isInteger(rounds) || rounds < 1 || rounds > 20) throw new Error(`--rounds ${values.rounds}: give 1 to 20`);
  const log = (l: string) => console.error(l);
  const startedAt = Date.now();
  const savedEnv = Object.fromEntries(TEMPORAL_VARS.map((k) => [k, process.env[k]]));
  const restoreEnv = () => {
    for (const [k, v] of Object.entries(savedEnv)) v === undefined ? delete process.env[k] : (process.env[k] = v);
  };

  const base = await ensureBaseImage({ memoryMiB: 512, accel: 'tcg', log });
  // The throughput's VMs are small: a 256 MiB base if it builds here, else the tests' own.
  const small: BuiltBaseImage = await ensureBaseImage({ memoryMiB: 256, accel: 'tcg', log }).catch((err: Error) => {
    log(`no 256 MiB base image (${err.message}); the throughput uses the 512 MiB one`);
    return base;
  });
  const cloudlets: CloudletSpec[] = CLOUDLETS.map((name) => ({ name, baseImages: [...new Set([base.dir, small.dir])], imageCacheDir: join(STATE_DIR, 'cloudlets', name, 'images') }));
  const placement = values.loopback ? { wan: undefined, relayTemporalIntoWan: false } : { wan: WAN, relayTemporalIntoWan: true };

  const cases: CaseResult[] = [];
  let nodeKill: NodeKillFigures = { verified: false, guestContinued: false, extraSeconds: null, bytesResent: null };
  const throughput: { cluster: ThroughputFigure | { handoffsPerMinute: number }; devServer: ThroughputFigure | { handoffsPerMinute: number } } = {
    cluster: { handoffsPerMinute: 0 },
    devServer: { handoffsPerMinute: 0 },
  };
  const testbedTags: string[] = [];
  const durations: Record<string, number> = {};
  const timed = async <T>(what: string, f: () => Promise<T>): Promise<T> => {
    const t = Date.now();
    try {
      return await f();
    } finally {
      durations[what] = Math.round((Date.now() - t) / 100) / 10;
    }
  };
  let info: ClusterInfo | undefined;
  try {
    // A crashed earlier run's cluster first: then a fresh database, so no old workflow is in the way.
    await clusterDown({ stateDir: CLUSTER_STATE, purge: true, log });
    info = await timed('clusterUp', () => clusterUp({ stateDir: CLUSTER_STATE, tls: true, ui: false, log }));
    const tls = info.tls!;
    Object.assign(process.env, {
      TEMPORAL_ADDRESS: info.address,
      TEMPORAL_NAMESPACE: 'default',
      // The cluster's own client certificate (the site CA's, clientAuth); the name its frontends'
      // certificate carries, which the workers in the testbed must verify instead of the core's address.
      TEMPORAL_TLS_CLIENT_CERT_PATH: tls.certFile,
      TEMPORAL_TLS_CLIENT_KEY_PATH: tls.keyFile,
      TEMPORAL_TLS_SERVER_CA_CERT_PATH: tls.caFile,
      TEMPORAL_TLS_SERVER_NAME: tls.serverName,
    });
    const clusterInfo = info;
    cases.push(await runCase(NAMES.tls, log, () => tlsOnly(clusterInfo, temporalTarget())));

    let cluster: EmbeddedCluster | undefined;
    let startError: Error | undefined;
    try {
      cluster = await timed('startCloudlets', () =>
        startEmbeddedCluster({ runTag: 'cluster-tests', cloudlets, ...placement, workerRestartDelayMs: 5_000, log }),
      ).catch((err: Error) => ((startError = err), undefined));
      if (cluster?.wan) testbedTags.push(cluster.wan.tag);
      const need = (): EmbeddedCluster => {
        if (!cluster) throw new Error(`the cloudlets did not start: ${startError?.message}`);
        return cluster;
      };
      const ctx = () => ({ cluster: need(), info: clusterInfo, stateDir: CLUSTER_STATE, baseImageId: base.id, log });
      cases.push(await timed('chain', () => runCase(NAMES.chain, log, () => moveChain(ctx()))));
      cases.push(await timed('drain', () => runCase(NAMES.drain, log, () => drainB(ctx()))));
      cases.push(
        await timed('nodeKill', () =>
          runCase(NAMES.nodeKill, log, async () => {
            const r = await nodeKillMidStream(ctx());
            nodeKill = r.figures;
            return r;
          }),
        ),
      );
      cases.push(
        await timed('throughputCluster', () =>
          runCase(NAMES.throughputCluster, log, async () => {
            const f = await measureThroughput(need(), { n, rounds, baseImageId: small.id, label: 'c', linkMbps: throughputMbps, log });
            throughput.cluster = f;
            return { failures: f.failures, detail: { ...f } };
          }),
        ),
      );
    } finally {
      await cluster?.stop();
    }
    restoreEnv();
    // Nothing of the cluster competes for the cores while the dev server is measured.
    await clusterDown({ stateDir: CLUSTER_STATE, log });

    const dbFile = join(STATE_DIR, `ehoff-cluster-devserver-${process.pid}.db`);
    let dev: EmbeddedCluster | undefined;
    try {
      cases.push(
        await timed('throughputDevServer', () =>
          runCase(NAMES.throughputDev, log, async () => {
            dev = await startEmbeddedCluster({ runTag: 'cluster-devserver', devServer: { dbFile }, cloudlets, ...(placement.wan ? { wan: placement.wan } : {}), log });
            if (dev.wan) testbedTags.push(dev.wan.tag);
            const f = await measureThroughput(dev, { n, rounds, baseImageId: small.id, label: 'd', linkMbps: throughputMbps, log });
            throughput.devServer = f;
            return { failures: f.failures, detail: { ...f } };
          }),
        ),
      );
    } finally {
      await dev?.stop();
      await rm(dbFile, { force: true });
    }
  } catch (err) {
    log(`cluster suite: ${(err as Error).stack ?? String(err)}`);
    for (const name of Object.values(NAMES).slice(0, -1)) {
      if (!cases.some((c) => c.name === name)) cases.push({ name, passed: false, failures: [`not run: ${(err as Error).message}`], seconds: 0, detail: {} });
    }
  } finally {
    restoreEnv();
    await clusterDown({ stateDir: CLUSTER_STATE, log }).catch((err: Error) => log(`cluster down: ${err.message}`));
  }
  cases.push(await runCase(NAMES.clean, log, () => leftovers(testbedTags)));
  log(`durations (s): ${Object.entries(durations).map(([k, v]) => `${k} ${v}`).join(', ')}`);
  report({ cases, nodeKill, throughput, placement, n, small, seconds: Math.round((Date.now() - startedAt) / 1000) }, values.json);
}

/** What a run of this suite could leave: its testbeds' namespaces, its VMs' RAM files, its run folders, a listener on 17xxx. */
async function leftovers(testbedTags: string[]): Promise<{ failures: string[]; detail: Record<string, unknown> }> {
  const { stdout: netns } = await run('ip', ['netns', 'list']);
  const namespaces = netns.split('\n').filter((l) => testbedTags.some((t) => l.startsWith(`ehoff-${t}-`)));
  const shm = (await readdir('/dev/shm')).filter((f) => /^ehoff-[A-C]-cl-/.test(f));
  const runDirs = (await readdir('/tmp')).filter((f) => /^ehoff-cluster-(tests|devserver)-[A-C]$/.test(f));
  const { stdout: ss } = await run('ss', ['-Hltn']);
  const ports = ss.split('\n').map((l) => /:(17\d{3})\s/.exec(l)?.[1]).filter((p): p is string => p !== undefined);
  const failures = [
    namespaces.length > 0 && `namespaces left: ${namespaces.join(', ')}`,
    shm.length > 0 && `RAM files left in /dev/shm: ${shm.join(', ')}`,
    runDirs.length > 0 && `run folders left in /tmp: ${runDirs.join(', ')}`,
    ports.length > 0 && `still listening on ${[...new Set(ports)].join(', ')}`,
  ].filter((f): f is string => typeof f === 'string');
  return { failures, detail: { testbeds: testbedTags } };
}

function report(r: {
  cases: CaseResult[];
  nodeKill: NodeKillFigures;
  throughput: { cluster: { handoffsPerMinute: number }; devServer: { handoffsPerMinute: number } };
  placement: { wan?: { mbps: number; rttMs: number } };
  n: number;
  small: BuiltBaseImage;
  seconds: number;
}, json: boolean | undefined): void {
  const out = (l: string) => (json ? console.error(l) : console.log(l));
  out(['| case | result | s |', '| --- | --- | --- |', ...r.cases.map((c) => `| ${c.name} | ${c.passed ? 'PASS' : `FAIL: ${c.failures.join('; ')}`} | ${c.seconds} |`)].join('\n'));
  const k = r.nodeKill;
  out(`node kill: verified ${k.verified}, guest continued ${k.guestContinued}, ${k.extraSeconds ?? '—'} s extra, ${k.bytesResent ?? '—'} bytes resent (${k.killedNode ?? 'no node'} killed at ${k.stepAtKill ?? '—'})`);
  out(`throughput (${r.n} idle VMs moved at once): cluster ${r.throughput.cluster.handoffsPerMinute}/min, dev server ${r.throughput.devServer.handoffsPerMinute}/min`);
  const passed = r.cases.filter((c) => c.passed).length;
  out(`${passed} of ${r.cases.length} passed in ${r.seconds} s`);
  if (json) {
    // Exactly the issue's three keys; what else a reader needs sits inside them.
    const cloudlets = r.placement.wan ? `wan-testbed ${r.placement.wan.mbps} Mbit/s, ${r.placement.wan.rttMs} ms` : 'loopback';
    const baseImage = { id: r.small.id, memoryMiB: r.small.manifest.machine.memoryMiB };
    console.log(
      JSON.stringify({
        cases: r.cases,
        nodeKill: { ...r.nodeKill, cloudlets },
        throughput: {
          cluster: { ...r.throughput.cluster, cloudlets, baseImage },
          devServer: { ...r.throughput.devServer, cloudlets, baseImage },
        },
      }),
    );
  }
  process.exitCode = passed === r.cases.length ? 0 : 1;
}

main().catch((err) => {
  console.error(`cluster suite: ${err instanceof Error ? err.stack : String(err)}`);
  process.exit(2);
});
