import { HOST, SERVICES, type ClusterLayout, type NodeLayout } from './layout.js';
import type { ClusterTlsFiles } from './cluster-tls.js';

/**
 * The files the cluster's programs read, as plain objects (written as JSON, which YAML
 * parsers read as YAML). Shaped after the server's config/development-postgres12.yaml.
 */

export interface DatabaseAccess {
  port: number;
  user: string;
  password: string;
}

export const DATABASES = { default: 'temporal', visibility: 'temporal_visibility' } as const;

/**
 * One server node running every service. Nodes find each other through the cluster_membership
 * table in the shared database, then gossip (ringpop) on their membership ports; each node's
 * broadcast address is 127.0.0.1, so they differ only by port.
 */
export function nodeConfig(layout: ClusterLayout, node: NodeLayout, db: DatabaseAccess, tls: ClusterTlsFiles | undefined, logLevel: string): object {
  const store = (databaseName: string, maxConns: number) => ({
    sql: {
      pluginName: 'postgres12',
      databaseName,
      connectAddr: `${HOST}:${db.port}`,
      connectProtocol: 'tcp',
      user: db.user,
      password: db.password,
      // Every service of every node opens its own pools: 2 nodes × 4 services × (10 + 5)
      // stays well inside the instance's max_connections (postgres.ts).
      maxConns,
      maxIdleConns: maxConns,
      maxConnLifetime: '1h',
    },
  });
  const frontendOfFirst = layout.nodes[0]!.grpcPorts.frontend;
  return {
    log: { stdout: true, level: logLevel, format: 'json' },
    persistence: {
      defaultStore: 'postgres-default',
      visibilityStore: 'postgres-visibility',
      // Small: shards are the unit that moves between history services when a node goes.
      numHistoryShards: 4,
      datastores: { 'postgres-default': store(DATABASES.default, 10), 'postgres-visibility': store(DATABASES.visibility, 5) },
    },
    global: {
      membership: { maxJoinDuration: '30s', broadcastAddress: HOST },
      pprof: { port: 0 },
      ...(tls ? { tls: tlsSection(tls) } : {}),
    },
    services: Object.fromEntries(
      SERVICES.map((s) => [
        s,
        {
          rpc: {
            grpcPort: node.grpcPorts[s],
            membershipPort: node.membershipPorts[s],
            bindOnIP: HOST,
            ...(s === 'frontend' ? { httpPort: node.frontendHttpPort } : {}),
          },
        },
      ]),
    ),
    clusterMetadata: {
      enableGlobalNamespace: false,
      failoverVersionIncrement: 10,
      masterClusterName: 'active',
      currentClusterName: 'active',
      clusterInformation: {
        // Stored once in the database by the first node; the same on every node.
        active: { enabled: true, initialFailoverVersion: 1, rpcName: 'frontend', rpcAddress: `${HOST}:${frontendOfFirst}` },
      },
    },
    dcRedirectionPolicy: { policy: 'noop' },
    dynamicConfigClient: { filepath: layout.dynamicConfigFile, pollInterval: '10s' },
  };
}

/**
 * Frontend gRPC (and HTTP) with mutual TLS against the site CA; the system worker, which calls
 * the frontend, presents the cluster's certificate. Traffic between services stays plaintext on
 * loopback (internode TLS is the same shape, under `internode`, for nodes on separate hosts).
 */
function tlsSection(tls: ClusterTlsFiles): object {
  const client = { serverName: tls.serverName, rootCaFiles: [tls.caFile] };
  return {
    frontend: {
      server: { certFile: tls.certFile, keyFile: tls.keyFile, requireClientAuth: true, clientCaFiles: [tls.caFile] },
      client,
    },
    systemWorker: { certFile: tls.certFile, keyFile: tls.keyFile, client },
  };
}

/** Dynamic config shared by every node (the server re-reads it every 10 s). */
export function dynamicConfig(): object {
  const v = (value: unknown) => [{ value, constraints: {} }];
  return {
    // A search attribute registered by `up` (or a test) is usable at once, not after the cache's minute.
    'system.forceSearchAttributesCacheRefreshOnRead': v(true),
    // Update and Update-with-Start (the handoff's steering) — on by default in 1.32; stated, since the project relies on them.
    'frontend.enableUpdateWorkflowExecution': v(true),
    'frontend.enableUpdateWorkflowExecutionAsyncAccepted': v(true),
    // No outbound calls: this cluster talks only on loopback.
    'frontend.enableServerVersionCheck': v(false),
    'limit.maxIDLength': v(255),
  };
}

/** The UI server's config: it reaches the frontends through the balancer, so it outlives a node. */
export function uiConfig(layout: ClusterLayout, tls: ClusterTlsFiles | undefined): object {
  return {
    temporalGrpcAddress: `${HOST}:${layout.balancer.port}`,
    host: HOST,
    port: layout.ui.port,
    enableUi: true,
    defaultNamespace: 'default',
    refreshInterval: '1m',
    // No outbound fetches from the browser's page either.
    disableNewsFetch: true,
    notifyOnNewVersion: false,
    distribution: 'server',
    cors: { cookieInsecure: false, allowOrigins: [`http://${HOST}:${layout.ui.port}`, `http://localhost:${layout.ui.port}`] },
    forwardHeaders: [],
    tls: tls
      ? { caFile: tls.caFile, certFile: tls.certFile, keyFile: tls.keyFile, serverName: tls.serverName, enableHostVerification: true }
      : {},
  };
}
