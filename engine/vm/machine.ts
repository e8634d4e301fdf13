import { z } from 'zod';

/**
 * What a VM is made of, independent of where it runs. Source and target must start QEMU from the
 * same spec: migration needs the same devices and the same RAM block name on both sides.
 */
export const machineSpecSchema = z.object({
  /**
   * Whole 8 KiB, not only whole MiB: the benchmark runs 1 GiB − 8 KiB guests, because QEMU
   * 7.2's own migration under TCG loses pages of a RAM block aligned to 256 KiB (see
   * bench/handoff/qemu-migration.ts). QEMU rounds `-m` up to 8 KiB, and the memory backend's
   * size must equal it.
   */
  memoryMiB: z
    .number()
    .min(64)
    .max(65536)
    .refine((mib) => Number.isInteger(mib * 128), { message: 'memoryMiB must be a whole number of 8 KiB' }),
  cpus: z.number().int().min(1).max(64),
  accel: z.enum(['tcg', 'kvm']),
  kernelCmdline: z.string(),
});
export type MachineSpec = z.infer<typeof machineSpecSchema>;

/** Where one running instance keeps its files (all created and removed by the driver's owner). */
export interface VmPaths {
  kernel: string;
  initrd: string;
  /** Guest RAM as a host file (tmpfs); the memory-backend-file shares it with QEMU. */
  ramFile: string;
  /** The disk image QEMU opens (the FUSE-served file, or a plain file while building a base). */
  disk: string;
  qmpSocket: string;
  serialSocket: string;
  serialLog: string;
}

/** The RAM block's name: it must match at source and target (DESIGN: pitfalls with QEMU 7.2). */
export const RAM_BACKEND_ID = 'mem';

const SAFE_PATH = /^[\w./+-]+$/;

export function assertSafePath(path: string, what: string): void {
  if (!SAFE_PATH.test(path)) throw new Error(`${what} path ${JSON.stringify(path)} has characters QEMU option syntax cannot carry`);
}

/** The disk's block node: named so that block jobs and exports can address it. */
export const DISK_NODE_NAME = 'disk0-format';

/**
 * The QEMU argv for a spec. `-S`: never run before the driver says `cont`. The disk is raw (the
 * FUSE-served file) unless `diskFormat` says qcow2, which only the QEMU baselines of the
 * benchmark use (a qcow2 top layer over the base disk).
 */
export function qemuArgs(
  spec: MachineSpec,
  paths: VmPaths,
  opts: { incoming: boolean; diskFormat?: 'raw' | 'qcow2'; privateRam?: boolean; /** `-global` properties (driver.property=value): the benchmark's QEMU migration settings. */ globals?: string[] },
): string[] {
  for (const [what, p] of Object.entries(paths)) assertSafePath(p, what);
  const mem = `${spec.memoryMiB * 1024}K`;
  const accel = spec.accel === 'kvm' ? ['-accel', 'kvm', '-accel', 'tcg'] : ['-accel', 'tcg'];
  return [
    '-nodefaults',
    '-display', 'none',
    '-no-reboot',
    '-S',
    '-machine', `q35,memory-backend=${RAM_BACKEND_ID}`,
    ...accel,
    '-smp', String(spec.cpus),
    '-m', mem,
    // size must equal -m; share=on so the host file *is* the guest's memory.
    // privateRam (QEMU baselines only): the file is the initial content, mapped copy-on-write.
    '-object', `memory-backend-file,id=${RAM_BACKEND_ID},size=${mem},mem-path=${paths.ramFile},share=${opts.privateRam ? 'off' : 'on'}`,
    '-kernel', paths.kernel,
    '-initrd', paths.initrd,
    '-append', spec.kernelCmdline,
    '-chardev', `socket,id=ser0,path=${paths.serialSocket},server=on,wait=off,logfile=${paths.serialLog},logappend=on`,
    '-serial', 'chardev:ser0',
    // locking off: the FUSE layer serves one writer by construction, and FUSE lacks OFD locks.
    '-drive', `file=${paths.disk},format=${opts.diskFormat ?? 'raw'},if=none,id=disk0,node-name=${DISK_NODE_NAME},cache=writeback,file.locking=off`,
    '-device', 'virtio-blk-pci,drive=disk0',
    '-qmp', `unix:${paths.qmpSocket},server=on,wait=off`,
    ...(opts.incoming ? ['-incoming', 'defer'] : []),
    ...(opts.globals ?? []).flatMap((g) => ['-global', g]),
  ];
}
