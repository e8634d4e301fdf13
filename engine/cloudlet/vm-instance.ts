import { chmod, copyFile, mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { DiskOverlay } from '../disk/disk-overlay.js';
import { FuseDisk } from '../disk/fuse-disk.js';
import type { CachedBaseImage } from '../image/image-cache.js';
import { QemuVm, sendConsoleLine } from '../vm/qemu-vm.js';
import { SerialLog } from '../vm/serial-log.js';
import { HeartbeatWatch } from '../vm/heartbeat-watch.js';
import type { VmPaths } from '../vm/machine.js';

export interface VmFiles {
  dir: string;
  ramFile: string;
  diskOverlay: string;
  deviceState: string;
  mountPoint: string;
  qmpSocket: string;
  serialSocket: string;
  serialLog: string;
}

/** The files of one VM on one cloudlet; RAM on tmpfs, everything named with the project prefix. */
export function vmFiles(runDir: string, cloudlet: string, vmId: string, prefix: string): VmFiles {
  const dir = join(runDir, 'vms', vmId);
  const tag = randomBytes(3).toString('hex');
  return {
    dir,
    ramFile: `/dev/shm/${prefix}-${cloudlet}-${vmId}-${tag}.ram`,
    diskOverlay: join(dir, 'disk.overlay'),
    deviceState: join(dir, 'device.state'),
    mountPoint: join(dir, 'mnt'),
    qmpSocket: join(dir, 'qmp.sock'),
    serialSocket: join(dir, 'serial.sock'),
    serialLog: join(dir, 'serial.log'),
  };
}

/**
 * One VM on a cloudlet: QEMU with its RAM in a host file and its disk served through FUSE as
 * base + overlay. Built either from a base image (launch) or from a received overlay (handoff).
 */
export class VmInstance {
  readonly serial: SerialLog;
  /** Heartbeat arrival times on the host clock: the guest-side view of downtime. */
  readonly heartbeats: HeartbeatWatch;

  private constructor(
    readonly vmId: string,
    readonly base: CachedBaseImage,
    readonly files: VmFiles,
    readonly disk: DiskOverlay,
    readonly fuse: FuseDisk,
    readonly qemu: QemuVm,
  ) {
    this.serial = new SerialLog(files.serialLog);
    this.heartbeats = new HeartbeatWatch(files.serialLog);
  }

  /** Lays out a VM's files: RAM as a copy of the base memory, an empty disk overlay. */
  static async prepare(files: VmFiles, base: CachedBaseImage): Promise<DiskOverlay> {
    await mkdir(files.dir, { recursive: true });
    await copyFile(base.path('memory'), files.ramFile);
    // The base is read-only; this copy is the VM's own memory.
    await chmod(files.ramFile, 0o600);
    return DiskOverlay.open(base.path('disk'), files.diskOverlay, base.manifest.disk.sizeBytes);
  }

  /**
   * Mounts the disk and starts QEMU paused from `deviceState` (the base's, or a received one),
   * or without one, waiting for `loadDeviceState`. On failure everything started here is undone;
   * the caller still owns `files` and `disk`.
   */
  static async start(vmId: string, base: CachedBaseImage, files: VmFiles, disk: DiskOverlay, deviceState?: string): Promise<VmInstance> {
    const fuse = await FuseDisk.mount(files.mountPoint, disk);
    try {
      const paths: VmPaths = {
        kernel: base.path('kernel'),
        initrd: base.path('initrd'),
        ramFile: files.ramFile,
        disk: fuse.diskPath,
        qmpSocket: files.qmpSocket,
        serialSocket: files.serialSocket,
        serialLog: files.serialLog,
      };
      const qemu = await QemuVm.start(base.manifest.machine, paths, deviceState === undefined ? { awaitIncoming: true } : { deviceState });
      const vm = new VmInstance(vmId, base, files, disk, fuse, qemu);
      await vm.heartbeats.start();
      return vm;
    } catch (err) {
      await fuse.unmount().catch(() => undefined);
      throw err;
    }
  }

  /** The device state for a VM started without one; it stays paused until `cont`. */
  async loadDeviceState(file: string): Promise<void> {
    await this.qemu.loadDeviceState(file);
  }

  async console(line: string): Promise<void> {
    await sendConsoleLine(this.files.serialSocket, line);
  }

  /** Stops QEMU and removes every file of this VM: the end of this copy of it. */
  async destroy(): Promise<void> {
    await this.heartbeats.stop();
    await this.qemu.quit().catch(() => this.qemu.kill());
    await this.fuse.unmount().catch(() => undefined);
    await this.disk.close();
    await removeVmFiles(this.files);
  }
}

export async function removeVmFiles(files: VmFiles): Promise<void> {
  await rm(files.ramFile, { force: true });
  await rm(files.dir, { recursive: true, force: true });
}
