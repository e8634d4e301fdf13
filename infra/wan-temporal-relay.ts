import { spawn } from 'node:child_process';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { REPO_ROOT } from './paths.js';
import { hostPort, tcpRelay } from './tcp-relay.js';
import type { WanTestbed } from './wan-testbed.js';

export interface WanTemporalRelay {
  /** The relay process inside the core namespace. */
  pid: number;
  stop(): Promise<void>;
}

/**
 * Temporal for workers inside a WAN testbed when the server runs on the host, outside the testbed
 * (a cluster's load balancer on 127.0.0.1): the workers dial `<their core address>:<port>` just as
 * they dial an embedded server in the core namespace. A relay in the core namespace listens there
 * (0.0.0.0:port) and forwards over the host ↔ core link — unshaped, the operator's, not part of
 * the WAN — to a relay on the host's end of that link, in this process, which forwards to
 * `upstream`. So each worker's Temporal traffic still crosses its cloudlet's shaped link, and the
 * host's routing is not touched. TLS passes through untouched: the server's certificate must
 * carry the name the workers verify (TEMPORAL_TLS_SERVER_NAME), not the core's address.
 */
export async function relayTemporalIntoWan(wan: WanTestbed, upstream: string, port: number): Promise<WanTemporalRelay> {
  const hostSide = tcpRelay(hostPort(upstream));
  await new Promise<void>((resolve, reject) => {
    hostSide.server.once('error', reject);
    hostSide.server.listen(0, wan.hostAddress, () => resolve());
  });
  const hostSidePort = (hostSide.server.address() as AddressInfo).port;
  // stdin is the relay's lifeline: it ends when this process ends, however it ends.
  const child = spawn(
    'ip',
    ['netns', 'exec', wan.coreNs, process.execPath, '--import', 'tsx', join(REPO_ROOT, 'infra', 'tcp-relay.ts'),
      '--listen', `0.0.0.0:${port}`, '--to', `${wan.hostAddress}:${hostSidePort}`],
    { stdio: ['pipe', 'pipe', 'pipe'], cwd: REPO_ROOT },
  );
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (t: string) => (stderr = (stderr + t).slice(-2000)));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async () => {
    child.stdin!.end();
    const gone = await Promise.race([exited.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 3_000))]);
    if (!gone) {
      child.kill('SIGKILL');
      await exited;
    }
    await hostSide.close();
  };
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the Temporal relay in the core namespace did not start within 30 s')), 30_000);
      createInterface({ input: child.stdout! }).once('line', () => {
        clearTimeout(timer);
        resolve();
      });
      void exited.then(() => {
        clearTimeout(timer);
        reject(new Error(`the Temporal relay in ${wan.coreNs} exited: ${stderr.trim()}`));
      });
    });
  } catch (err) {
    await stop();
    throw err;
  }
  return { pid: child.pid!, stop };
}
