import { spawn } from 'node:child_process';
import { mkdir, open, readFile, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { HandoffError } from '../errors.js';
import { HOST_RECORD_FILE, type HostRecord } from './host-protocol.js';
import { VmHostClient } from './vm-host-client.js';

const HOST_MAIN = fileURLToPath(new URL('./vm-host-main.ts', import.meta.url));
/** The project's root: `--import tsx` resolves from there. */
const PROJECT_ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** QEMU start-up and, for a launch, loading the base's device state. */
const HOST_READY_TIMEOUT_MS = 60_000;

/**
 * Starts the host process of one VM, detached in a session of its own and not waited for, so
 * that it outlives this process; returns a connection to it once it serves. The record is written
 * first: from then on a restarted worker (or a sweep) can find what this started.
 */
export async function spawnVmHost(record: HostRecord): Promise<VmHostClient> {
  const { files } = record;
  await mkdir(files.dir, { recursive: true });
  const recordPath = join(files.dir, HOST_RECORD_FILE);
  await writeFile(recordPath, JSON.stringify(record, null, 2));
  const log = await open(files.hostLog, 'a');
  let exited: string | undefined;
  try {
    const child = spawn(process.execPath, ['--import', 'tsx', HOST_MAIN, recordPath], {
      cwd: PROJECT_ROOT,
      detached: true,
      stdio: ['ignore', log.fd, log.fd],
    });
    child.once('exit', (code, signal) => (exited = `exited (code ${code}, signal ${signal})`));
    child.once('error', (err) => (exited = `could not start: ${err.message}`));
    child.unref();
    try {
      return await VmHostClient.connect(record.vmId, files.hostSocket, HOST_READY_TIMEOUT_MS, () => exited === undefined);
    } catch (err) {
      if (exited === undefined) child.kill('SIGKILL');
      const tail = (await readFile(files.hostLog, 'utf8').catch(() => '')).slice(-2000);
      throw new HandoffError('VM_LOST', `the host of VM '${record.vmId}' did not start (${exited ?? (err as Error).message}): ${tail}`);
    }
  } finally {
    await log.close();
  }
}
