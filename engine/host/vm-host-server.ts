import { createServer, type Server, type Socket } from 'node:net';
import { rm, writeFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { DemandQueue } from '../disk/demand-queue.js';
import { DiskOverlay } from '../disk/disk-overlay.js';
import { FuseDisk } from '../disk/fuse-disk.js';
import { QemuVm } from '../vm/qemu-vm.js';
import { HandoffError } from '../errors.js';
import {
  HOST_PIDS_FILE,
  HOST_CONTINUED_FILE,
  hostMethodArgs,
  hostRequestSchema,
  sentChunksFile,
  type HostMethod,
  type HostRecord,
  type HostReplies,
  type HostReply,
  type HostStatus,
} from './host-protocol.js';
import { join } from 'node:path';

type Handlers = { [M in HostMethod]: (args: never) => Promise<HostReplies[M]> };

/** A missing block still waited on this long after it was handed to a worker is handed again (that worker may be gone). */
const DEMAND_REMIND_MS = 2_000;

/**
 * The process that owns one VM: its QEMU (a child of this process, so it dies with it and only
 * with it), its disk served through FUSE as base + overlay, and the overlay's block map and dirty
 * sets. A cloudlet worker starts it and talks to it over a unix socket; the worker may exit and
 * come back at any time, and this goes on (containerd's shim, libvirt's QEMU).
 */
export class VmHostServer {
  private server?: Server;
  private continued = false;
  private destroying?: Promise<void>;
  /** Post-copy: the missing disk blocks the guest waits on, for the worker to fetch first. */
  private readonly demand = new DemandQueue();

  private constructor(
    readonly record: HostRecord,
    private readonly disk: DiskOverlay,
    private readonly fuse: FuseDisk,
    private readonly qemu: QemuVm,
  ) {
    disk.onDemand((index) => this.demand.add(index));
  }

  /** Mounts the disk and starts QEMU as the record says; undoes what it started if that fails. */
  static async start(record: HostRecord): Promise<VmHostServer> {
    const { files } = record;
    // A fresh overlay: a host is started once per VM copy, and only it writes this file's map.
    const disk = await DiskOverlay.open(record.baseDisk, files.diskOverlay, record.diskSizeBytes);
    let fuse: FuseDisk | undefined;
    try {
      fuse = await FuseDisk.mount(files.mountPoint, disk);
      const paths = {
        kernel: record.kernel,
        initrd: record.initrd,
        ramFile: files.ramFile,
        disk: fuse.diskPath,
        qmpSocket: files.qmpSocket,
        serialSocket: files.serialSocket,
        serialLog: files.serialLog,
      };
      const qemu = await QemuVm.start(
        record.machine,
        paths,
        record.start.kind === 'from-device-state' ? { deviceState: record.start.deviceState } : { awaitIncoming: true },
      );
      return new VmHostServer(record, disk, fuse, qemu);
    } catch (err) {
      await fuse?.unmount().catch(() => undefined);
      await disk.close();
      throw err;
    }
  }

  /** Serves requests on the record's socket; writes the PID file once it does. */
  async listen(): Promise<void> {
    const path = this.record.files.hostSocket;
    await rm(path, { force: true });
    const server = createServer((socket) => this.serve(socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => resolve());
    });
    server.on('error', (err) => console.error(`vm host ${this.record.vmId}: socket error: ${err.message}`));
    this.server = server;
    await writeFile(join(this.record.files.dir, HOST_PIDS_FILE), JSON.stringify({ hostPid: process.pid, qemuPid: this.qemu.pid ?? null }));
  }

  status(): HostStatus {
    return {
      vmId: this.record.vmId,
      hostPid: process.pid,
      qemuPid: this.qemu.exited ? null : (this.qemu.pid ?? null),
      runState: 'unknown',
      exitInfo: this.qemu.exited ? this.qemu.exitReason : null,
      start: this.record.start,
      continued: this.continued,
      dirtyBlocks: this.disk.dirtyCount,
      diskWrites: this.disk.writeCount,
    };
  }

  /** Ends the VM for good: QEMU, the mount, the files. Safe to call twice. */
  destroy(): Promise<void> {
    this.destroying ??= (async () => {
      this.server?.close();
      await this.qemu.quit().catch(() => this.qemu.kill());
      await this.fuse.unmount().catch((err: Error) => console.error(`vm host ${this.record.vmId}: ${err.message}`));
      await this.disk.close();
      await rm(this.record.files.ramFile, { force: true });
      await rm(sentChunksFile(this.record.files), { force: true });
      await rm(this.record.files.dir, { recursive: true, force: true });
    })();
    return this.destroying;
  }

  private readonly handlers: Handlers = {
    status: async () => ({ ...this.status(), runState: this.qemu.exited ? 'exited' : await this.qemu.status() }),
    pause: () => this.qemu.pause().then(() => null),
    cont: async () => {
      // Declared before it takes effect: from this `cont` on, an incoming VM is this cloudlet's.
      if (this.record.start.kind === 'incoming' && !this.continued) {
        await writeFile(join(this.record.files.dir, HOST_CONTINUED_FILE), this.record.start.handoffId);
        this.continued = true;
      }
      await this.qemu.cont();
      return null;
    },
    saveDeviceState: (a: { file: string }) => this.qemu.saveDeviceState(a.file).then(() => null),
    loadDeviceState: (a: { file: string }) => this.qemu.loadDeviceState(a.file).then(() => null),
    dirtyBlocks: async () => this.disk.dirtyBlocks(),
    takeEpochDirty: async () => this.disk.takeEpochDirty(),
    markWritten: async (a: { indices: number[] }) => {
      this.disk.markWritten(a.indices);
      return null;
    },
    markMissing: async (a: { indices: number[] }) => {
      this.disk.markMissing(a.indices);
      return null;
    },
    missingBlocks: async () => this.disk.missingBlocks(),
    fillBlocks: async (a: { blocks: Array<{ index: number; data: string }> }) => {
      const out = { filled: [] as number[], dropped: [] as number[] };
      for (const { index, data } of a.blocks) ((await this.disk.fill(index, Buffer.from(data, 'base64'))) ? out.filled : out.dropped).push(index);
      return out;
    },
    awaitDemand: (a: { waitMs: number }) => {
      this.demand.remind(this.disk.waitedOn(), DEMAND_REMIND_MS);
      return this.demand.next(a.waitMs);
    },
    flush: () => this.disk.flush().then(() => null),
    destroy: () => this.destroy().then(() => null),
  };

  private serve(socket: Socket): void {
    // A client that goes away mid-request is the normal case (a worker killed): never fatal here.
    socket.on('error', () => undefined);
    const lines = createInterface({ input: socket, crlfDelay: Infinity });
    // readline re-emits its input's errors: unhandled, one reset connection would end the host.
    lines.on('error', () => undefined);
    lines.on('line', (line) => void this.answer(socket, line));
  }

  private async answer(socket: Socket, line: string): Promise<void> {
    let id = -1;
    let method: HostMethod | undefined;
    let reply: HostReply;
    try {
      const request = hostRequestSchema.parse(JSON.parse(line));
      id = request.id;
      method = request.method;
      const args = hostMethodArgs[request.method].parse(request.args ?? {});
      const result = await (this.handlers[request.method] as (a: unknown) => Promise<unknown>)(args);
      reply = { id, ok: true, result };
    } catch (err) {
      const e = err instanceof Error ? err : new Error(String(err));
      reply = { id, ok: false, error: { code: e instanceof HandoffError ? e.code : null, message: e.message } };
    }
    if (!socket.destroyed) socket.write(JSON.stringify(reply) + '\n');
    if (reply.ok && method === 'destroy') {
      // The reply to `destroy` is out: nothing is left for this process to do.
      socket.end(() => process.exit(0));
    }
  }
}
