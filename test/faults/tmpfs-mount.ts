import { execFile } from 'node:child_process';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { promisify } from 'node:util';

const run = promisify(execFile);

async function mounted(path: string): Promise<boolean> {
  return (await readFile('/proc/mounts', 'utf8')).split('\n').some((l) => l.split(' ')[1] === path);
}

/**
 * A tmpfs of its own for one cloudlet's RAM files, so that a fault case can fill it without
 * touching /dev/shm, which every other VM and process on the machine shares. One a crashed run
 * left mounted is unmounted first.
 */
export async function mountTmpfs(path: string, sizeMiB: number): Promise<void> {
  await unmountTmpfs(path);
  await mkdir(path, { recursive: true });
  await run('mount', ['-t', 'tmpfs', '-o', `size=${sizeMiB}m,mode=0700`, 'ehoff-faults-ram', path]);
}

export async function unmountTmpfs(path: string): Promise<void> {
  if (await mounted(path)) await run('umount', ['--lazy', path]);
  await rm(path, { recursive: true, force: true });
}

/** Fills the tmpfs at `path` but `leaveMiB` with one file; returns it (remove it to undo). */
export async function fillTmpfs(path: string, leaveMiB: number): Promise<string> {
  const { stdout } = await run('df', ['--output=avail', '-B1', path]);
  const free = Number(stdout.trim().split('\n').at(-1));
  const filler = `${path}/ehoff-faults-filler`;
  await run('fallocate', ['-l', String(Math.max(0, free - leaveMiB * 2 ** 20)), filler]);
  return filler;
}
