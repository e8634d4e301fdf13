import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * What a base-image build that died left behind. A build names its files by its own PID (the
 * staging folder beside the built images, the guest's RAM file in /dev/shm — 1 GiB of tmpfs —
 * and its QMP/serial sockets in /tmp) and removes them when it ends; killed, it cannot. QEMU
 * itself dies with its builder (parent-death signal), so files are all there is to sweep.
 */
export interface BuildFolders {
  buildDir: string;
  shmDir: string;
  tmpDir: string;
}

/** A leftover: the PID of the build that made it, and where it is. */
export interface BuildLeftover {
  pid: number;
  path: string;
}

/**
 * The leftovers among these folder listings, by their names alone. Pure, so the patterns have
 * their own tests; `prefix` is the project's (ehoff).
 */
export function buildLeftoversIn(prefix: string, folders: BuildFolders, names: { build: string[]; shm: string[]; tmp: string[] }): BuildLeftover[] {
  const pick = (dir: string, list: string[], pattern: RegExp) =>
    list.flatMap((name) => {
      const m = pattern.exec(name);
      return m ? [{ pid: Number(m[1]), path: join(dir, name) }] : [];
    });
  return [
    ...pick(folders.buildDir, names.build, /^\.staging-(\d+)$/),
    ...pick(folders.shmDir, names.shm, new RegExp(`^${prefix}-build-(\\d+)\\.ram$`)),
    ...pick(folders.tmpDir, names.tmp, new RegExp(`^${prefix}-build-(\\d+)-[a-z]+\\.sock$`)),
    // bench:handoff's QEMU baselines run their guests on RAM files of their own, and its work
    // folder holds their disks: a benchmark killed mid-row leaves them (it builds its base first,
    // so its next start sweeps them here).
    ...pick(folders.shmDir, names.shm, new RegExp(`^${prefix}-bench-(\\d+)-qemu-[a-z]+-[a-z]+\\.ram$`)),
    ...pick(folders.tmpDir, names.tmp, new RegExp(`^${prefix}-bench-(\\d+)$`)),
  ];
}

/** Is a process with this PID running? (EPERM: it runs, as another user.) */
export function processRuns(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Removes the leftovers of builds whose process no longer runs; a running build's files (this
 * one's, or another process's building now) are kept. Returns what it removed. PIDs are this
 * PID namespace's: folders shared with another container's builds are not this sweep's to judge.
 */
export async function sweepDeadBuilds(prefix: string, folders: BuildFolders, runs: (pid: number) => boolean = processRuns): Promise<string[]> {
  const list = (dir: string) => readdir(dir).catch(() => [] as string[]);
  const [build, shm, tmp] = await Promise.all([list(folders.buildDir), list(folders.shmDir), list(folders.tmpDir)]);
  const dead = buildLeftoversIn(prefix, folders, { build, shm, tmp }).filter((l) => l.pid !== process.pid && !runs(l.pid));
  const removed: string[] = [];
  // One that cannot be removed (another user's, in sticky /tmp) must not stop the build.
  for (const l of dead) if (await rm(l.path, { recursive: true, force: true }).then(() => true, () => false)) removed.push(l.path);
  return removed;
}
