import { mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import Fuse from 'fuse-native';
import { HandoffError } from '../errors.js';
import { ImageCache, type CachedBaseImage } from '../image/image-cache.js';
import { CodecPool } from '../pipeline/codec-pool.js';
import { baseChunkReader } from '../pipeline/chunk-source.js';
import { DedupIndex } from '../pipeline/dedup-index.js';
import { MemoryTracker, type BasePageHashes } from '../memory/memory-tracker.js';
import { loadHash64 } from '../pipeline/checksum.js';
import { open } from 'node:fs/promises';
import { DataPlaneServer } from '../wire/data-plane-server.js';
import { VmInstance, removeVmFiles, vmFiles } from './vm-instance.js';

import type { Workload } from '../names.js';

export interface CloudletConfig {
  name: string;
  /** Per-run folder for VM files and sockets (keep it short: unix socket paths are limited). */
  runDir: string;
  imageCacheDir: string;
  /** Address the data plane listens on and advertises to sources. */
  dataHost: string;
  dataPort?: number;
  prefix: string;
  /** Pipeline threads; defaults to the cores available. */
  codecThreads?: number;
}

export interface VmDescription {
  vmId: string;
  cloudlet: string;
  baseImageId: string;
  runState: string;
  lastHeartbeat: number | null;
  dirtyDiskBlocks: number;
}

/** One edge site: its image cache, its VMs, and its data-plane listener. */
export class Cloudlet {
  readonly images: ImageCache;
  readonly dataPlane: DataPlaneServer;
  private readonly vms = new Map<string, VmInstance>();
  private pool?: CodecPool;
  private readonly dedupIndexes = new Map<string, Promise<DedupIndex>>();
  private readonly pageHashes = new Map<string, Promise<BasePageHashes>>();

  constructor(readonly config: CloudletConfig) {
    this.images = new ImageCache(config.imageCacheDir);
    this.dataPlane = new DataPlaneServer(config.dataHost, config.dataPort ?? 0);
  }

  get name(): string {
    return this.config.name;
  }

  async start(): Promise<void> {
    await releaseStaleMounts(this.config.runDir);
    await mkdir(this.config.runDir, { recursive: true });
    await this.dataPlane.start();
    await this.codecPool().warm();
  }

  /** Ends every VM of this cloudlet (the worker is going away and the FUSE disks with it). */
  async stop(): Promise<void> {
    for (const vm of this.vms.values()) await vm.destroy().catch(() => undefined);
    this.vms.clear();
    await this.pool?.close();
    await this.dataPlane.stop();
  }

  /** The pipeline's thread pool, shared by this cloudlet's streams. */
  codecPool(): CodecPool {
    this.pool ??= new CodecPool(this.config.codecThreads);
    return this.pool;
  }

  /** The dedup index of a base image, built on first use and kept: bases do not change. */
  dedupIndex(base: CachedBaseImage): Promise<DedupIndex> {
    let index = this.dedupIndexes.get(base.manifest.id);
    if (!index) {
      index = (async () => {
        const [memory, disk] = await Promise.all([open(base.path('memory'), 'r'), open(base.path('disk'), 'r')]);
        try {
          const reader = baseChunkReader(memory, base.manifest.memory.sizeBytes, disk, base.manifest.disk.sizeBytes);
          return await DedupIndex.build(reader, base.manifest.memory.sizeBytes / 4096, (await base.diskBlockHashes()).keys());
        } finally {
          await Promise.allSettled([memory.close(), disk.close()]);
        }
      })();
      index.catch(() => this.dedupIndexes.delete(base.manifest.id));
      this.dedupIndexes.set(base.manifest.id, index);
    }
    return index;
  }

  /** The base memory's per-page hashes, computed on first use and kept: bases do not change. */
  basePageHashes(base: CachedBaseImage): Promise<BasePageHashes> {
    let hashes = this.pageHashes.get(base.manifest.id);
    if (!hashes) {
      hashes = (async () => {
        const memory = await open(base.path('memory'), 'r');
        try {
          const records = await this.codecPool().blockHashRecords(base.path('memory'), base.manifest.memory.sizeBytes);
          return await MemoryTracker.hashBase(memory, base.manifest.memory.sizeBytes, await loadHash64(), records);
        } finally {
          await memory.close();
        }
      })();
      hashes.catch(() => this.pageHashes.delete(base.manifest.id));
      this.pageHashes.set(base.manifest.id, hashes);
    }
    return hashes;
  }

  files(vmId: string) {
    return vmFiles(this.config.runDir, this.name, vmId, this.config.prefix);
  }

  vm(vmId: string): VmInstance {
    const vm = this.vms.get(vmId);
    if (!vm) throw new HandoffError('VM_NOT_FOUND', `no VM '${vmId}' on cloudlet ${this.name}`);
    return vm;
  }

  hasVm(vmId: string): boolean {
    return this.vms.has(vmId);
  }

  adopt(vm: VmInstance): void {
    this.vms.set(vm.vmId, vm);
  }

  release(vmId: string): void {
    this.vms.delete(vmId);
  }

  /**
   * Starts a VM from a cached base image and, if given, its workload; returns once the workload's
   * first heartbeat is out (a workload that loads a large state first may need a longer wait).
   */
  async launchVm(vmId: string, baseImageId: string, workload?: Workload, opts: { readyTimeoutMs?: number } = {}): Promise<VmDescription> {
    if (this.vms.has(vmId)) throw new HandoffError('VM_EXISTS', `VM '${vmId}' already runs on cloudlet ${this.name}`);
    const base = await this.images.get(baseImageId);
    const files = this.files(vmId);
    const disk = await VmInstance.prepare(files, base);
    let vm: VmInstance;
    try {
      vm = await VmInstance.start(vmId, base, files, disk, base.path('deviceState'));
    } catch (err) {
      await disk.close();
      await removeVmFiles(files);
      throw err;
    }
    this.vms.set(vmId, vm);
    // Warm what a handoff of this VM needs from its base now, so that none pays for it.
    void this.dedupIndex(base).catch(() => undefined);
    void this.basePageHashes(base).catch(() => undefined);
    try {
      await vm.qemu.cont();
      if (workload) {
        await vm.console(['run', workload.name, ...workload.args].join(' '));
        await vm.serial.waitFor((t) => t.includes(`EHOFF-STARTED ${workload.name}`) || t.includes('EHOFF-ERROR'), 30_000);
        await vm.serial.waitForHeartbeatAbove(0, opts.readyTimeoutMs ?? 30_000);
      }
    } catch (err) {
      this.vms.delete(vmId);
      await vm.destroy();
      throw err;
    }
    return this.describe(vmId);
  }

  async describe(vmId: string): Promise<VmDescription> {
    const vm = this.vm(vmId);
    return {
      vmId,
      cloudlet: this.name,
      baseImageId: vm.base.manifest.id,
      runState: vm.qemu.exited ? 'exited' : await vm.qemu.status(),
      lastHeartbeat: (await vm.serial.lastHeartbeat()) ?? null,
      dirtyDiskBlocks: vm.disk.dirtyCount,
    };
  }

  async destroyVm(vmId: string): Promise<void> {
    const vm = this.vm(vmId);
    this.vms.delete(vmId);
    await vm.destroy();
  }
}

/** FUSE mounts left by a worker that died in this run folder: nobody serves them any more. */
export async function releaseStaleMounts(runDir: string): Promise<void> {
  const vmsDir = join(runDir, 'vms');
  const vmIds = await readdir(vmsDir).catch(() => [] as string[]);
  for (const id of vmIds) {
    const mnt = join(vmsDir, id, 'mnt');
    await new Promise<void>((resolve) => Fuse.unmount(mnt, () => resolve()));
  }
}
