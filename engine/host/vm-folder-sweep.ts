import { readFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { z } from 'zod';
import { setTimeout as sleep } from 'node:timers/promises';
import Fuse from 'fuse-native';
import { VmHostClient } from './vm-host-client.js';
import { HOST_PIDS_FILE, HOST_PROCESS_MARKER, HOST_RECORD_FILE, hostPidsSchema, hostRecordSchema, sentChunksFile, type HostRecord } from './host-protocol.js';

/** The PIDs a VM's host wrote once it served (host.pids.json), or undefined if none readable. */
export async function readHostPids(dir: string): Promise<z.infer<typeof hostPidsSchema> | undefined> {
  const text = await readFile(join(dir, HOST_PIDS_FILE), 'utf8').catch(() => undefined);
  if (text === undefined) return undefined;
  try {
    const parsed = hostPidsSchema.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

/** A VM folder's host record, or undefined where it is missing or unreadable. */
export async function readHostRecord(dir: string): Promise<HostRecord | undefined> {
  const text = await readFile(join(dir, HOST_RECORD_FILE), 'utf8').catch(() => undefined);
  if (text === undefined) return undefined;
  try {
    return hostRecordSchema.parse(JSON.parse(text));
  } catch {
    return undefined;
  }
}

/** The VM folders under a cloudlet's run folder. */
export async function vmFolders(runDir: string): Promise<string[]> {
  const vmsDir = join(runDir, 'vms');
  const names = await readdir(vmsDir).catch(() => [] as string[]);
  return names.map((n) => join(vmsDir, n));
}

/**
 * Removes what a VM whose host no longer answers left behind: the host and its QEMU if they
 * still run (each by its recorded PID, only if its command line is this VM's), the FUSE mount,
 * the RAM file, the folder. Returns what it removed, for the caller's report. The caller has
 * established that the host does not answer: this never asks.
 */
export async function sweepVmFolder(dir: string): Promise<string[]> {
  const removed: string[] = [];
  const record = await readHostRecord(dir);
  const pids = await readHostPids(dir);
  if (pids) {
    const recordPath = join(dir, HOST_RECORD_FILE);
    if (await killIfMatches(pids.hostPid, [HOST_PROCESS_MARKER, recordPath])) removed.push(`vm host pid ${pids.hostPid}`);
    if (pids.qemuPid !== null && record && (await killIfMatches(pids.qemuPid, [record.files.ramFile]))) removed.push(`QEMU pid ${pids.qemuPid}`);
  }
  const mountPoint = record?.files.mountPoint ?? join(dir, 'mnt');
  if (await isMounted(mountPoint)) {
    await new Promise<void>((resolve) => Fuse.unmount(mountPoint, () => resolve()));
    removed.push(`FUSE mount ${mountPoint}`);
  }
  if (record && (await rm(record.files.ramFile).then(() => true, () => false))) removed.push(`RAM file ${record.files.ramFile}`);
  if (record && (await rm(sentChunksFile(record.files)).then(() => true, () => false))) removed.push(`sent-chunk file ${sentChunksFile(record.files)}`);
  await rm(dir, { recursive: true, force: true });
  removed.push(`folder ${dir}`);
  return removed;
}

/** Whether the host recorded in a VM folder still runs (its PID, with this folder's record in its command line). */
export async function hostProcessRuns(dir: string): Promise<boolean> {
  const pidsText = await readFile(join(dir, HOST_PIDS_FILE), 'utf8').catch(() => undefined);
  const pids = pidsText ? hostPidsSchema.safeParse(JSON.parse(pidsText)) : undefined;
  if (!pids?.success) return false;
  const cmdline = await readFile(`/proc/${pids.data.hostPid}/cmdline`, 'utf8').catch(() => '');
  return cmdline.includes(HOST_PROCESS_MARKER) && cmdline.includes(join(dir, HOST_RECORD_FILE));
}

/** SIGKILLs `pid` if its command line holds every one of `needles`, and waits until it is gone. */
export async function killIfMatches(pid: number, needles: string[]): Promise<boolean> {
  const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => undefined);
  if (cmdline === undefined) return false;
  const argv = cmdline.split('\0');
  if (!needles.every((n) => argv.some((a) => a.includes(n)))) return false;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    return false;
  }
  for (let i = 0; i < 100 && (await readFile(`/proc/${pid}/stat`, 'utf8').then((s) => !/\) Z /.test(s), () => false)); i++) await sleep(50);
  return true;
}

export async function isMounted(path: string): Promise<boolean> {
  const mounts = await readFile('/proc/mounts', 'utf8').catch(() => '');
  return mounts.split('\n').some((l) => l.split(' ')[1] === path);
}

/**
 * Ends every VM under a run folder — through its host where the host answers, by sweeping where
 * it does not — and returns what was removed. For a run's own teardown, and for the start of a
 * run that reuses the folder of one that crashed; never for a folder a live worker uses.
 */
export async function sweepRunFolder(runDir: string): Promise<string[]> {
  const removed: string[] = [];
  for (const dir of await vmFolders(runDir)) {
    const record = await readHostRecord(dir);
    const host = record ? await VmHostClient.connect(record.vmId, record.files.hostSocket, 2_000).catch(() => undefined) : undefined;
    if (host && record) {
      await host.destroy().catch(() => undefined);
      removed.push(`VM ${record.vmId} (through its host)`);
    }
    removed.push(...(await sweepVmFolder(dir)));
  }
  return removed;
}
