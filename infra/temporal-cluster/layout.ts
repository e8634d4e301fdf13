import { join } from 'node:path';
import { STATE_DIR } from '../paths.js';

/** Where the cluster keeps its database, configs, logs and PID files. */
export const CLUSTER_STATE_DIR = join(STATE_DIR, 'cluster');
/**
 * The cluster's ports start here. 17xxx is below Linux's ephemeral range (32768–60999), so a
 * dev server or a client on a random port never takes one of them.
 */
export const DEFAULT_BASE_PORT = 17200;
export const HOST = '127.0.0.1';

export type ServiceName = 'frontend' | 'history' | 'matching' | 'worker';
export const SERVICES: readonly ServiceName[] = ['frontend', 'history', 'matching', 'worker'];

export interface NodeLayout {
  /** node-a, node-b, …: also the stem of its config, log and PID files. */
  name: string;
  /** gRPC port of each service, as in Temporal's own 7233/7234/7235/7239. */
  grpcPorts: Record<ServiceName, number>;
  /** Ringpop (membership gossip) port of each service. */
  membershipPorts: Record<ServiceName, number>;
  /** The frontend's HTTP API (Temporal's 7243). */
  frontendHttpPort: number;
  configFile: string;
  logFile: string;
  pidFile: string;
}

export interface ClusterLayout {
  stateDir: string;
  basePort: number;
  postgres: { port: number; dataDir: string; logFile: string; pidFile: string };
  /** The one address clients use: a TCP balancer over every node's frontend. */
  balancer: { port: number; logFile: string; pidFile: string };
  ui: { port: number; configDir: string; logFile: string; pidFile: string };
  dynamicConfigFile: string;
  tlsDir: string;
  recordFile: string;
  nodes: NodeLayout[];
}

/**
 * The port plan, from `basePort` (B, default 17200):
 *   B+32 PostgreSQL · B+33 frontend balancer · B+80 UI
 *   node i (1-based) at B+100·i: frontend +33, history +34, matching +35, worker +39,
 *   frontend HTTP +43, membership +63/+64/+65/+69 (frontend/history/matching/worker)
 * so with the default: node-a's frontend 17333, node-b's 17433, the balancer 17233.
 */
export function clusterLayout(opts: { stateDir?: string; basePort?: number; nodeCount?: number } = {}): ClusterLayout {
  const stateDir = opts.stateDir ?? CLUSTER_STATE_DIR;
  const base = opts.basePort ?? DEFAULT_BASE_PORT;
  const count = opts.nodeCount ?? 2;
  if (!Number.isInteger(count) || count < 1 || count > 8) throw new Error(`nodeCount must be 1 to 8, not ${count}`);
  if (!Number.isInteger(base) || base < 1024 || base + 100 * count + 100 > 32768) throw new Error(`basePort ${base} puts the cluster's ports outside 1024–32767`);
  const logs = join(stateDir, 'logs');
  const nodes = Array.from({ length: count }, (_, i): NodeLayout => {
    const name = `node-${String.fromCharCode(97 + i)}`;
    const at = base + 100 * (i + 1);
    return {
      name,
      grpcPorts: { frontend: at + 33, history: at + 34, matching: at + 35, worker: at + 39 },
      membershipPorts: { frontend: at + 63, history: at + 64, matching: at + 65, worker: at + 69 },
      frontendHttpPort: at + 43,
      configFile: join(stateDir, `ehoff-${name}.yaml`),
      logFile: join(logs, `${name}.log`),
      pidFile: join(stateDir, `${name}.pid`),
    };
  });
  return {
    stateDir,
    basePort: base,
    postgres: { port: base + 32, dataDir: join(stateDir, 'ehoff-pg'), logFile: join(logs, 'postgres.log'), pidFile: join(stateDir, 'postgres.pid') },
    balancer: { port: base + 33, logFile: join(logs, 'balancer.log'), pidFile: join(stateDir, 'balancer.pid') },
    ui: { port: base + 80, configDir: join(stateDir, 'ehoff-ui'), logFile: join(logs, 'ui.log'), pidFile: join(stateDir, 'ui.pid') },
    dynamicConfigFile: join(stateDir, 'ehoff-dynamic-config.yaml'),
    tlsDir: join(stateDir, 'tls'),
    recordFile: join(stateDir, 'cluster.json'),
    nodes,
  };
}

/** Every port the cluster listens on, each with what owns it (for the free-port check and for `down`'s proof). */
export function clusterPorts(layout: ClusterLayout): Array<{ port: number; owner: string }> {
  return [
    { port: layout.postgres.port, owner: 'postgres' },
    { port: layout.balancer.port, owner: 'balancer' },
    { port: layout.ui.port, owner: 'ui' },
    ...layout.nodes.flatMap((n) => [
      ...SERVICES.map((s) => ({ port: n.grpcPorts[s], owner: `${n.name} ${s}` })),
      ...SERVICES.map((s) => ({ port: n.membershipPorts[s], owner: `${n.name} ${s} membership` })),
      { port: n.frontendHttpPort, owner: `${n.name} frontend http` },
    ]),
  ];
}
