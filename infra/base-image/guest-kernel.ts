import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile, rename, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface GuestKernel {
  /** The Debian package it came from, e.g. linux-image-6.1.0-56-amd64_6.1.192-2. */
  packageId: string;
  vmlinuz: string;
  modulesDir: string;
}

/**
 * Debian's stock kernel for the guest: `linux-image-amd64` names the current versioned package,
 * which is downloaded and unpacked once into the cache (no install on the host).
 */
export async function ensureGuestKernel(cacheDir: string, log: (line: string) => void): Promise<GuestKernel> {
  const currentFile = join(cacheDir, 'current');
  const cached = await readFile(currentFile, 'utf8').then((s) => s.trim(), () => undefined);
  if (cached) {
    const found = await locate(join(cacheDir, cached), cached).catch(() => undefined);
    if (found) return found;
  }
  await mkdir(cacheDir, { recursive: true });
  const work = await mkdtemp(join(cacheDir, '.download-'));
  try {
    log('downloading the guest kernel (Debian linux-image-amd64)');
    try {
      await run('apt-get', ['download', 'linux-image-amd64'], { cwd: work });
    } catch {
      // No or stale package lists on this machine: refresh them once.
      await run('apt-get', ['update', '-qq']);
      await run('apt-get', ['download', 'linux-image-amd64'], { cwd: work });
    }
    const meta = (await readdir(work)).find((f) => f.startsWith('linux-image-amd64_'));
    if (!meta) throw new Error('apt-get download linux-image-amd64 produced no package');
    const { stdout: depends } = await run('dpkg-deb', ['-f', join(work, meta), 'Depends']);
    const versioned = /linux-image-[\w.+-]+-amd64/.exec(depends)?.[0];
    if (!versioned) throw new Error(`cannot tell the kernel package from linux-image-amd64's Depends: ${depends}`);
    await run('apt-get', ['download', versioned], { cwd: work, maxBuffer: 1 << 20 });
    const deb = (await readdir(work)).find((f) => f.startsWith(`${versioned}_`));
    if (!deb) throw new Error(`apt-get download ${versioned} produced no package`);
    const packageId = deb.replace(/_amd64\.deb$/, '');
    const root = join(work, 'root');
    await run('dpkg-deb', ['-x', join(work, deb), root]);
    const dest = join(cacheDir, packageId);
    await rm(dest, { recursive: true, force: true });
    await rename(root, dest);
    await writeFile(currentFile, packageId + '\n');
    return await locate(dest, packageId);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

async function locate(root: string, packageId: string): Promise<GuestKernel> {
  const boot = await readdir(join(root, 'boot'));
  const vmlinuz = boot.find((f) => f.startsWith('vmlinuz-'));
  if (!vmlinuz) throw new Error(`no vmlinuz in ${root}/boot`);
  const release = vmlinuz.slice('vmlinuz-'.length);
  const modulesDir = join(root, 'lib', 'modules', release);
  await stat(modulesDir);
  return { packageId, vmlinuz: join(root, 'boot', vmlinuz), modulesDir };
}

/** Finds `<name>.ko` below the modules folder (the kernel's layout varies by release). */
export async function findModule(modulesDir: string, name: string): Promise<string> {
  const { stdout } = await run('find', [join(modulesDir, 'kernel'), '-name', `${name}.ko`]);
  const path = stdout.split('\n').find(Boolean);
  if (!path) throw new Error(`kernel module ${name}.ko not found under ${modulesDir}`);
  return path;
}
