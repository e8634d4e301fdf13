import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { Connection, type ConnectionOptions } from '@temporalio/client';
import { resolveTemporalCli } from '../temporal-cli.js';
import { SERVICES, type ServiceName } from './layout.js';
import type { ClusterTlsFiles } from './cluster-tls.js';
import { CLUSTER_BINARIES } from './tools.js';

const run = promisify(execFile);

/** What the cluster's own admin calls (readiness, namespaces, membership) dial, and with which certificate. */
export interface Target {
  address: string;
  tls?: ClusterTlsFiles;
}

/** The TypeScript SDK's connection options for a target (the cluster's certificate if TLS). */
export async function connectionOptions(t: Target): Promise<ConnectionOptions> {
  if (!t.tls) return { address: t.address };
  const [ca, crt, key] = await Promise.all([readFile(t.tls.caFile), readFile(t.tls.certFile), readFile(t.tls.keyFile)]);
  return { address: t.address, tls: { serverNameOverride: t.tls.serverName, serverRootCACertificate: ca, clientCertPair: { crt, key } } };
}

/** Whether the frontend at the target answers GetSystemInfo within `timeoutMs`. */
export async function frontendAnswers(t: Target, timeoutMs = 2_000): Promise<boolean> {
  try {
    const conn = await Connection.connect({ ...(await connectionOptions(t)), connectTimeout: timeoutMs });
    try {
      await conn.withDeadline(Date.now() + timeoutMs, () => conn.workflowService.getSystemInfo({}));
      return true;
    } finally {
      await conn.close();
    }
  } catch {
    return false;
  }
}

/** Waits until the frontend answers, or `failed()` names why it never will, or `ms` pass. */
export async function waitFrontend(t: Target, ms: number, failed: () => Promise<string | undefined>): Promise<void> {
  for (const deadline = Date.now() + ms; ; await sleep(500)) {
    if (await frontendAnswers(t)) return;
    const why = await failed();
    if (why) throw new Error(why);
    if (Date.now() > deadline) throw new Error(`the frontend at ${t.address} did not answer within ${ms / 1000} s`);
  }
}

// The CLI reads no profile or TEMPORAL_* variable here: only the flags below name the cluster.
const cleanEnv = () => Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('TEMPORAL_')));

/** Runs the Temporal CLI against the target; returns stdout. */
export async function temporalCli(t: Target, args: string[], timeoutMs = 30_000): Promise<string> {
  const cli = await resolveTemporalCli();
  const conn = ['--address', t.address, '--disable-config-file', '--disable-config-env', '--command-timeout', `${Math.ceil(timeoutMs / 1000)}s`];
  if (t.tls) conn.push('--tls-ca-path', t.tls.caFile, '--tls-cert-path', t.tls.certFile, '--tls-key-path', t.tls.keyFile, '--tls-server-name', t.tls.serverName);
  try {
    const { stdout } = await run(cli, [...args, ...conn], { env: cleanEnv(), timeout: timeoutMs + 5_000 });
    return stdout;
  } catch (e) {
    const err = e as Error & { stderr?: string };
    throw new Error(`temporal ${args.slice(0, 3).join(' ')} at ${t.address} failed: ${(err.stderr || err.message).trim().slice(-600)}`);
  }
}

/** Each role's ring as one node's membership (ringpop) sees it: each member by its gRPC address. */
export type Rings = Record<ServiceName, string[]>;

/**
 * The membership as the node behind `t` sees it, from the server's admin API
 * (tdbg membership list-gossip: ringpop's own view, per role).
 */
export async function membership(t: Target): Promise<Rings> {
  const args = ['--address', t.address];
  if (t.tls) args.push('--tls-ca-path', t.tls.caFile, '--tls-cert-path', t.tls.certFile, '--tls-key-path', t.tls.keyFile, '--tls-server-name', t.tls.serverName);
  const { stdout } = await run(CLUSTER_BINARIES.tdbg, [...args, 'membership', 'list-gossip'], { env: cleanEnv(), timeout: 10_000 });
  return parseGossip(stdout);
}

/** tdbg's list-gossip JSON: `[{ role, memberCount, members: [{ identity }] }]` (wrapped in an object in some versions). */
export function parseGossip(json: string): Rings {
  const parsed = JSON.parse(json) as unknown;
  const rings = (Array.isArray(parsed) ? parsed : ((parsed as { rings?: unknown[] }).rings ?? [])) as Array<{ role?: string; members?: Array<{ identity?: string }> }>;
  const out = Object.fromEntries(SERVICES.map((s) => [s, [] as string[]])) as Rings;
  for (const r of rings) {
    if (r.role && (SERVICES as readonly string[]).includes(r.role)) out[r.role as ServiceName] = (r.members ?? []).map((m) => m.identity ?? '?').sort();
  }
  return out;
}
