import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFile, mkdir, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';
import { setTimeout as sleep } from 'node:timers/promises';
import { BASE_IMAGE_FORMAT_VERSION, FILE_NAMES, MANIFEST_FILE, type BaseImageManifest } from '../../engine/image/base-image.js';
import { baseImageIdOf } from '../../engine/image/image-cache.js';
import { digestFromBlockHashes, encodeBlockHashes, scanImage, sha256OfFile } from '../../engine/image/image-digest.js';
import { machineSpecSchema, type MachineSpec } from '../../engine/vm/machine.js';
import { QemuVm } from '../../engine/vm/qemu-vm.js';
import { SerialLog } from '../../engine/vm/serial-log.js';
import { sweepDeadBuilds } from './build-leftovers.js';
import { cpioNewc, type CpioEntry } from './cpio-newc.js';
import { ensureGuestKernel, findModule } from './guest-kernel.js';
import { BASE_IMAGE_BUILD_DIR, GUEST_KERNEL_DIR, GUEST_SOURCES_DIR, PREFIX } from '../paths.js';

const run = promisify(execFile);

/** Bump when the build changes in a way the recipe inputs below do not show. */
const BUILDER_VERSION = 1;
/** Debian builds these as modules; the init script loads them in this (dependency) order. */
const GUEST_MODULES = [
  'virtio_ring', 'virtio', 'virtio_pci_modern_dev', 'virtio_pci_legacy_dev', 'virtio_pci', 'virtio_blk',
  'crc16', 'crc32c_generic', 'mbcache', 'jbd2', 'ext4',
];
const DISK_BYTES = 8 * 1024 ** 3;
/** How long the booted guest idles before its memory is captured, so boot-time churn is in the base. */
const SETTLE_MS = 2_000;

export interface BaseImageOptions {
  memoryMiB: number;
  accel: 'tcg' | 'kvm';
  log?: (line: string) => void;
}

export interface BuiltBaseImage {
  id: string;
  dir: string;
  manifest: BaseImageManifest;
}

/** Returns the base image for these options, building it only if its recipe changed. */
export async function ensureBaseImage(opts: BaseImageOptions): Promise<BuiltBaseImage> {
  const log = opts.log ?? (() => undefined);
  for (const path of await sweepDeadBuilds(PREFIX, { buildDir: BASE_IMAGE_BUILD_DIR, shmDir: '/dev/shm', tmpDir: '/tmp' })) log(`swept from a build that died: ${path}`);
  const kernel = await ensureGuestKernel(GUEST_KERNEL_DIR, log);
  const machine: MachineSpec = machineSpecSchema.parse({
    memoryMiB: opts.memoryMiB,
    cpus: 1,
    accel: opts.accel,
    kernelCmdline: 'console=ttyS0 panic=-1 quiet',
  });
  const workloads = await readWorkloadSources();
  const init = await readFile(join(GUEST_SOURCES_DIR, 'init'));
  const recipe = createHash('sha256')
    .update(JSON.stringify({ BUILDER_VERSION, kernel: kernel.packageId, machine, GUEST_MODULES, DISK_BYTES }))
    .update(init)
    .update(JSON.stringify([...workloads].map(([n, s]) => [n, createHash('sha256').update(s).digest('hex')])))
    .digest('hex');
  const recipeFile = join(BASE_IMAGE_BUILD_DIR, 'recipes', recipe);
  const knownId = await readFile(recipeFile, 'utf8').then((s) => s.trim(), () => undefined);
  if (knownId) {
    const dir = join(BASE_IMAGE_BUILD_DIR, knownId);
    const manifest = await readFile(join(dir, MANIFEST_FILE), 'utf8').then((s) => JSON.parse(s) as BaseImageManifest, () => undefined);
    if (manifest) return { id: knownId, dir, manifest };
  }

  log(`building base image (recipe ${recipe.slice(0, 12)}, ${Number.isInteger(opts.memoryMiB) ? `${opts.memoryMiB} MiB` : `${opts.memoryMiB * 1024} KiB`} RAM, 8 GiB disk)`);
  const staging = join(BASE_IMAGE_BUILD_DIR, `.staging-${process.pid}`);
  await rm(staging, { recursive: true, force: true });
  await mkdir(staging, { recursive: true });
  const ramFile = `/dev/shm/${PREFIX}-build-${process.pid}.ram`;
  try {
    await copyFile(kernel.vmlinuz, join(staging, FILE_NAMES.kernel));
    await writeFile(join(staging, FILE_NAMES.initrd), await buildInitramfs(init, workloads, kernel.modulesDir, staging));
    await makeDataDisk(join(staging, FILE_NAMES.disk));
    await bootAndCapture(machine, staging, ramFile, log);
    await run('cp', ['--sparse=always', ramFile, join(staging, FILE_NAMES.memory)]);
    const manifest = await describe(staging, machine, recipe);
    await writeFile(join(staging, MANIFEST_FILE), JSON.stringify(manifest, null, 2) + '\n');
    const dir = join(BASE_IMAGE_BUILD_DIR, manifest.id);
    await rm(dir, { recursive: true, force: true });
    await rename(staging, dir);
    await mkdir(join(BASE_IMAGE_BUILD_DIR, 'recipes'), { recursive: true });
    await writeFile(recipeFile, manifest.id + '\n');
    log(`base image ${manifest.id} ready in ${dir}`);
    return { id: manifest.id, dir, manifest };
  } finally {
    await rm(ramFile, { force: true });
    await rm(staging, { recursive: true, force: true });
  }
}

async function readWorkloadSources(): Promise<Map<string, Buffer>> {
  const dir = join(GUEST_SOURCES_DIR, 'workloads');
  const names = (await readdir(dir)).filter((f) => f.endsWith('.c') || f.endsWith('.h')).sort();
  return new Map(await Promise.all(names.map(async (n) => [n, await readFile(join(dir, n))] as [string, Buffer])));
}

async function buildInitramfs(init: Buffer, workloads: Map<string, Buffer>, modulesDir: string, work: string): Promise<Buffer> {
  const entries: CpioEntry[] = ['bin', 'dev', 'proc', 'sys', 'data', 'lib', 'lib/modules', 'workloads'].map((path) => ({ kind: 'dir', path }));
  entries.push({ kind: 'chardev', path: 'dev/console', major: 5, minor: 1 });
  entries.push({ kind: 'file', path: 'init', data: init, mode: 0o755 });
  entries.push({ kind: 'file', path: 'bin/busybox', data: await readFile('/bin/busybox'), mode: 0o755 });
  for (const name of GUEST_MODULES) {
    entries.push({ kind: 'file', path: `lib/modules/${name}.ko`, data: await readFile(await findModule(modulesDir, name)) });
  }
  entries.push({ kind: 'file', path: 'lib/modules/load-order', data: Buffer.from(GUEST_MODULES.join('\n') + '\n') });
  const sources = join(work, 'workload-sources');
  await mkdir(sources);
  for (const [file, code] of workloads) await writeFile(join(sources, file), code);
  for (const source of [...workloads.keys()].filter((f) => f.endsWith('.c'))) {
    const name = source.replace(/\.c$/, '');
    const bin = join(work, name);
    await run('gcc', ['-static', '-O2', '-Wall', '-o', bin, join(sources, source), '-lm']);
    entries.push({ kind: 'file', path: `workloads/${name}`, data: await readFile(bin), mode: 0o755 });
    await rm(bin);
  }
  await rm(sources, { recursive: true });
  return gzipSync(cpioNewc(entries), { level: 6 });
}

async function makeDataDisk(path: string): Promise<void> {
  await writeFile(path, '');
  await run('truncate', ['-s', String(DISK_BYTES), path]);
  // Inode tables written now, not by the guest's lazy-init thread after every resume.
  await run('mkfs.ext4', ['-q', '-F', '-E', 'lazy_itable_init=0,lazy_journal_init=0', '-L', 'edge-data', path]);
}

async function bootAndCapture(machine: MachineSpec, dir: string, ramFile: string, log: (l: string) => void): Promise<void> {
  const serialLog = join(dir, 'serial.log');
  const sock = (n: string) => `/tmp/${PREFIX}-build-${process.pid}-${n}.sock`;
  const vm = await QemuVm.start(machine, {
    kernel: join(dir, FILE_NAMES.kernel),
    initrd: join(dir, FILE_NAMES.initrd),
    ramFile,
    disk: join(dir, FILE_NAMES.disk),
    qmpSocket: sock('qmp'),
    serialSocket: sock('serial'),
    serialLog,
  });
  try {
    const started = Date.now();
    await vm.cont();
    const console = new SerialLog(serialLog);
    await console.waitFor((text) => text.includes('EHOFF-READY') || text.includes('EHOFF-ERROR') || text.includes('Kernel panic'), 120_000);
    const text = await console.text();
    if (!text.includes('EHOFF-READY') || text.includes('EHOFF-ERROR')) throw new Error(`guest did not boot cleanly:\n${text.slice(-3000)}`);
    log(`guest booted in ${Date.now() - started} ms; settling`);
    await sleep(SETTLE_MS);
    await vm.pause();
    await vm.saveDeviceState(join(dir, FILE_NAMES.deviceState));
  } finally {
    await vm.quit();
    await rm(sock('qmp'), { force: true });
    await rm(sock('serial'), { force: true });
    await rm(serialLog, { force: true });
  }
}

async function describe(dir: string, machine: MachineSpec, recipe: string): Promise<BaseImageManifest> {
  const file = (name: string) => join(dir, name);
  const memory = await scanImage(file(FILE_NAMES.memory), machine.memoryMiB * 1024 * 1024);
  const disk = await scanImage(file(FILE_NAMES.disk), DISK_BYTES);
  await writeFile(file(FILE_NAMES.diskBlockHashes), encodeBlockHashes(disk.hashes));
  const ref = async (name: string) => ({ name, sha256: await sha256OfFile(file(name)) });
  const body = {
    formatVersion: BASE_IMAGE_FORMAT_VERSION,
    machine,
    kernel: await ref(FILE_NAMES.kernel),
    initrd: await ref(FILE_NAMES.initrd),
    deviceState: await ref(FILE_NAMES.deviceState),
    memory: { name: FILE_NAMES.memory, sizeBytes: memory.sizeBytes, digest: digestFromBlockHashes(memory.sizeBytes, memory.hashes) },
    disk: { name: FILE_NAMES.disk, sizeBytes: (await stat(file(FILE_NAMES.disk))).size, digest: digestFromBlockHashes(DISK_BYTES, disk.hashes) },
    diskBlockHashes: await ref(FILE_NAMES.diskBlockHashes),
  } as const;
  return { ...body, id: baseImageIdOf(body), createdAt: new Date().toISOString(), recipe };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const memoryMiB = Number(process.argv.find((a) => a.startsWith('--memory-mib='))?.split('=')[1] ?? 512);
  // Progress on stderr, the result on stdout.
  ensureBaseImage({ memoryMiB, accel: 'tcg', log: (l) => console.error(l) }).then(
    (b) => console.log(JSON.stringify({ id: b.id, dir: b.dir })),
    (err) => {
      console.error(err instanceof Error ? err.message : err);
      process.exit(1);
    },
  );
}
