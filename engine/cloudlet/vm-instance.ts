import { chmod, copyFile, mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { HostedDisk } from '../disk/hosted-disk.js';
import { HandoffError } from '../errors.js';
import type { CachedBaseImage } from '../image/image-cache.js';
import { sendConsoleLine } from '../vm/qemu-vm.js';
import { SerialLog } from '../vm/serial-log.js';
import { HeartbeatWatch } from '../vm/heartbeat-watch.js';
import { spawnVmHost } from '../host/spawn-vm-host.js';
import { sweepVmFolder } from '../host/vm-folder-sweep.js';
import { HOST_PROTOCOL_VERSION, type HostRecord, type VmFiles } from '../host/host-protocol.js';
import type { VmHostClient } from '../host/vm-host-client.js';

export type { VmFiles };

/**
 * The files of one VM on one cloudlet; RAM on tmpfs (`ramDir`, /dev/shm unless the cloudlet
 * has its own), everything named with the project prefix.
 */
export function vmFiles(runDir: string, cloudlet: string, vmId: string, prefix: string, ramDir = '/dev/shm'): VmFiles {
  const dir = join(runDir, 'vms', vmId);
  const tag = randomBytes(3).toString('hex');
  return {
    dir,
    ramFile: join(ramDir, `${prefix}-${cloudlet}-${vmId}-${tag}.ram`),
    diskOverlay: join(dir, 'disk.overlay'),
    deviceState: join(dir, 'device.state'),
    mountPoint: join(dir, 'mnt'),
    qmpSocket: join(dir, 'qmp.sock'),
    serialSocket: join(dir, 'serial.sock'),
    serialLog: join(dir, 'serial.log'),
    hostSocket: join(dir, 'host.sock'),
    hostLog: join(dir, 'host.log'),
  };
}

/**
 * One VM on a cloudlet, as its worker holds it: a connection to the VM's host process (which
 * owns QEMU, the FUSE disk and the change tracking, and outlives the worker), the disk's bytes as
 * files, and the guest's serial log. Built from a base image (launch), for an incoming handoff
 * (target), or by re-adopting a host a previous worker started.
 */
export class VmInstance {
  readonly serial: SerialLog;
  /** Heartbeat arrival times on the host clock: the guest-side view of downtime. */
  readonly heartbeats: HeartbeatWatch;

  private constructor(
    readonly record: HostRecord,
    readonly base: CachedBaseImage,
    readonly host: VmHostClient,
    readonly disk: HostedDisk,
  ) {
    this.serial = new SerialLog(record.files.serialLog);
    this.heartbeats = new HeartbeatWatch(record.files.serialLog);
  }

  get vmId(): string {
    return this.record.vmId;
  }

  get files(): VmFiles {
    return this.record.files;
  }

  /** Lays out a VM's files: its folder, and RAM as a copy of the base memory. */
  static async layOut(files: VmFiles, base: CachedBaseImage): Promise<void> {
    await mkdir(files.dir, { recursive: true });
    try {
      await copyFile(base.path('memory'), files.ramFile);
    } catch (err) {
      // A tmpfs that filled up part-way leaves a partial file nothing else records: it goes now.
      await rm(files.ramFile, { force: true });
      throw new HandoffError('TARGET_CANNOT_RUN', `cannot lay out the RAM file ${files.ramFile} (${base.manifest.memory.sizeBytes >> 20} MiB): ${(err as Error).message}`);
    }
    // The base is read-only; this copy is the VM's own memory.
    await chmod(files.ramFile, 0o600);
  }

  /**
   * Starts the host of a VM laid out by `layOut`: QEMU paused, from `start`'s device state or
   * waiting for one. On failure nothing of the VM is left.
   */
  static async start(vmId: string, cloudlet: string, base: CachedBaseImage, files: VmFiles, start: HostRecord['start']): Promise<VmInstance> {
    const record: HostRecord = {
      version: HOST_PROTOCOL_VERSION,
      vmId,
      cloudlet,
      baseImageId: base.manifest.id,
      machine: base.manifest.machine,
      kernel: base.path('kernel'),
      initrd: base.path('initrd'),
      baseDisk: base.path('disk'),
      diskSizeBytes: base.manifest.disk.sizeBytes,
      files,
      start,
    };
    try {
      const host = await spawnVmHost(record);
      return await VmInstance.adopt(record, base, host);
    } catch (err) {
      await sweepVmFolder(files.dir);
      throw err;
    }
  }

  /** Takes over a VM whose host runs (started by this worker or an earlier one). */
  static async adopt(record: HostRecord, base: CachedBaseImage, host: VmHostClient): Promise<VmInstance> {
    const disk = await HostedDisk.open(host, record.baseDisk, record.files.diskOverlay, record.diskSizeBytes);
    const vm = new VmInstance(record, base, host, disk);
    await vm.heartbeats.start();
    return vm;
  }

  async console(line: string): Promise<void> {
    await sendConsoleLine(this.files.serialSocket, line);
  }

  /** Drops this worker's hold on the VM; the VM and its host go on. */
  async detach(): Promise<void> {
    await this.heartbeats.stop();
    await this.disk.close();
    this.host.close();
  }

  /** Ends the VM: its host stops QEMU and removes every file; a host that is gone is swept. */
  async destroy(): Promise<void> {
    await this.heartbeats.stop();
    await this.disk.close();
    await this.host.destroy().catch(() => undefined);
    await sweepVmFolder(this.files.dir);
  }
}
