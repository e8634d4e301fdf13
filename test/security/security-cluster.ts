import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { startEmbeddedCluster, type EmbeddedCluster } from '../../infra/embedded-cluster.js';
import { STATE_DIR } from '../../infra/paths.js';

/**
 * The suite's scratch folder (captures, reassembled flows, another site's CA, the dev server's
 * database): one fixed path, so a crashed run's is swept by the next start, as its cluster is.
 */
export const SECURITY_SCRATCH = '/tmp/ehoff-sec-scratch';

export async function freshScratch(): Promise<{ dir: string; remove(): Promise<void> }> {
  await rm(SECURITY_SCRATCH, { recursive: true, force: true });
  await mkdir(SECURITY_SCRATCH, { recursive: true });
  return { dir: SECURITY_SCRATCH, remove: () => rm(SECURITY_SCRATCH, { recursive: true, force: true }) };
}

/**
 * The suite's stack: the dev server and cloudlets A, B and C, each worker in its namespace on
 * the WAN testbed (10 Mbit/s, 50 ms), with certificates from the development site CA.
 */
export async function startSecurityCluster(baseDir: string, scratch: string, log: (l: string) => void): Promise<EmbeddedCluster> {
  await mkdir(join(scratch, 'work'), { recursive: true });
  return startEmbeddedCluster({
    runTag: 'sec',
    devServer: { dbFile: join(scratch, 'temporal.db') },
    cloudlets: ['A', 'B', 'C'].map((name) => ({ name, baseImages: [baseDir], imageCacheDir: join(STATE_DIR, 'cloudlets', name, 'images') })),
    wan: { mbps: 10, rttMs: 50 },
    log,
  });
}
