import { access, mkdir, open, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { HandoffError } from '../errors.js';
import { ImageCache, type CachedBaseImage } from '../image/image-cache.js';
import { CodecPool } from '../pipeline/codec-pool.js';
import { baseChunkReader } from '../pipeline/chunk-source.js';
import { DedupIndex } from '../pipeline/dedup-index.js';
import { MemoryTracker, type BasePageHashes } from '../memory/memory-tracker.js';
import { loadHash64 } from '../pipeline/checksum.js';
import { DataPlaneServer } from '../wire/data-plane-server.js';
import type { CloudletTls } from '../wire/cloudlet-tls.js';
import { VmInstance, vmFiles, type VmFiles } from './vm-instance.js';
import { VmHostClient } from '../host/vm-host-client.js';
import { hostProcessRuns, readHostPids, readHostRecord, sweepVmFolder, vmFolders } from '../host/vm-folder-sweep.js';
import { HOST_CONTINUED_FILE, type HostRecord } from '../host/host-protocol.js';
import { CpuMeter } from './cpu-meter.js';
import { fetchBaseImage, serveBasePart, type BaseFetchReport } from '../image/base-transfer.js';
import type { DataEndpoint } from '../wire/overlay-sender.js';
import type { Workload } from '../names.js';

/** How long a restarted worker waits for each surviving host to answer before it counts it gone. */
const READOPT_CONNECT_MS = 5_000;
/** How long it waits for a host whose process still runs (busy, or slow to start) before it kills it. */
const READOPT_RUNNING_HOST_MS = 30_000;

export interface CloudletConfig {
  name: string;
  /** Per-run folder for VM files and sockets (keep it short: unix socket paths are limited). */
  runDir: string;
  imageCacheDir: string;
  /** Address the data plane listens on and advertises to sources. */
  dataHost: string;
  dataPort?: number;
  prefix: string;
  /** The tmpfs folder for the VMs' RAM files; /dev/shm by default. */
  ramDir?: string;
  /** Pipeline threads; defaults to the cores available. */
  codecThreads?: number;
  /** Its certificate, key and the site CA: the data plane speaks mutual TLS only (see cloudlet-tls.ts). */
  tls: CloudletTls;
  /** Where the data plane's refusals are told; nowhere by default. */
  log?: (line: string) => void;
}

export interface VmDescription {
  vmId: string;
  cloudlet: string;
  baseImageId: string | null;
  /** QEMU's run state; `exited` if QEMU ended under a live host; `lost` if the host died. */
  runState: string;
  lostReason: string | null;
  lastHeartbeat: number | null;
  dirtyDiskBlocks: number;
}

/** What placement needs of a cloudlet now: its VMs, the base images it holds, whether it is drained. */
export interface CloudletState {
  cloudlet: string;
  draining: boolean;
  vms: Array<{ vmId: string; baseImageId: string; runState: string; /** Cores its QEMU kept busy since the last read. */ cpuCores: number | null }>;
  /** VMs whose host died here (their record kept until destroyed: see `describe`). */
  lostVms: string[];
  baseImages: string[];
}

/** One edge site: its image cache, its VMs, and its data-plane listener. */
export class Cloudlet {
  readonly images: ImageCache;
  readonly dataPlane: DataPlaneServer;
  private readonly vms = new Map<string, VmInstance>();
  /** Handoffs whose target copy was continued here, as re-adopted from their hosts. */
  private readonly committedHandoffs = new Map<string, string>();
  private readonly incoming: Array<{ handoffId: string; vm: VmInstance }> = [];
  private pool?: CodecPool;
  private readonly dedupIndexes = new Map<string, Promise<DedupIndex>>();
  private readonly pageHashes = new Map<string, Promise<BasePageHashes>>();
  private readonly fetches = new Map<string, Promise<BaseFetchReport>>();
  /** Per-VM CPU as `state` reports it: over the time between two reads. */
  private readonly stateCpu = new CpuMeter();

  constructor(readonly config: CloudletConfig) {
    this.images = new ImageCache(config.imageCacheDir);
    this.dataPlane = new DataPlaneServer(config.dataHost, config.tls, config.dataPort ?? 0, config.log);
    this.dataPlane.serveBaseImages((request, send) => serveBasePart(this.images, request, send));
  }

  get name(): string {
    return this.config.name;
  }

  /**
   * Takes over the VMs an earlier worker of this cloudlet left running (their hosts outlive it),
   * sweeps what dead hosts left, then listens. VMs whose hosts are gone are reported lost.
   */
  async start(): Promise<void> {
    await mkdir(join(this.config.runDir, 'vms'), { recursive: true });
    await this.readopt();
    await this.dataPlane.start();
    await this.codecPool().warm();
  }

  /** Lets go of this cloudlet's VMs without ending them (the worker is going away; they stay). */
  async stop(): Promise<void> {
    for (const vm of this.vms.values()) await vm.detach().catch(() => undefined);
    this.vms.clear();
    await this.pool?.close();
    await this.dataPlane.stop();
  }

  /** Ends every VM of this cloudlet: an explicit teardown, never a worker's stop. */
  async destroyAll(): Promise<void> {
    for (const vmId of [...this.vms.keys()]) await this.destroyVm(vmId).catch(() => undefined);
  }

  /** What the last start re-adopted, removed and found lost: for the worker's log and the fault suite. */
  readonly recovery = { adopted: [] as string[], lost: [] as string[], swept: [] as string[] };

  private async readopt(): Promise<void> {
    for (const dir of await vmFolders(this.config.runDir)) {
      const record = await readHostRecord(dir);
      // A host whose process still runs gets longer to answer: a live VM is never swept on a guess.
      const connect = async (ms: number) => (record ? VmHostClient.connect(record.vmId, record.files.hostSocket, ms).catch(() => undefined) : undefined);
      const host = (await connect(READOPT_CONNECT_MS)) ?? ((await hostProcessRuns(dir)) ? await connect(READOPT_RUNNING_HOST_MS) : undefined);
      if (!record || !host) {
        // A host that does not answer has taken its QEMU with it: the VM is lost, not running.
        const committedHere = record?.start.kind === 'incoming' && (await exists(join(dir, HOST_CONTINUED_FILE)));
        if (record && (record.start.kind === 'from-device-state' || committedHere)) {
          await this.recordLost(record.vmId, `its host process was gone when the worker of ${this.name} started`);
          this.recovery.lost.push(record.vmId);
        }
        // A copy that was continued here, then lost, was still this handoff's commit: the
        // source's older copy must not run again on an answer that it was released.
        if (record?.start.kind === 'incoming' && committedHere) this.committedHandoffs.set(record.start.handoffId, record.vmId);
        this.recovery.swept.push(...(await sweepVmFolder(dir)));
        continue;
      }
      const status = await host.status().catch(() => undefined);
      const base = await this.images.get(record.baseImageId).catch(() => undefined);
      if (!status || !base) {
        host.close();
        this.recovery.swept.push(...(await sweepVmFolder(dir)));
        continue;
      }
      if (status.start.kind === 'incoming' && !status.continued) {
        // A handoff's target copy, never continued: not a VM of this cloudlet yet. The target
        // side takes it up again, or ends it (TargetHandoffs.recover).
        this.incoming.push({ handoffId: status.start.handoffId, vm: await VmInstance.adopt(record, base, host) });
        continue;
      }
      if (status.start.kind === 'incoming') this.committedHandoffs.set(status.start.handoffId, record.vmId);
      this.track(await VmInstance.adopt(record, base, host));
      this.recovery.adopted.push(record.vmId);
    }
  }

  /**
   * The incoming copies of handoffs in progress that the last start found (their hosts survived
   * an earlier worker), handed over once: their owner must take them up or end them.
   */
  takeIncoming(): Array<{ handoffId: string; vm: VmInstance }> {
    return this.incoming.splice(0);
  }

  /** Handoffs whose target copy was continued on this cloudlet, as re-adopted from their hosts. */
  committedHandoff(handoffId: string): string | undefined {
    return this.committedHandoffs.get(handoffId);
  }

  /** The handoff that brought VM `vmId` here, continued here, as re-adopted from its host. */
  handoffOf(vmId: string): string | undefined {
    for (const [handoffId, vm] of this.committedHandoffs) if (vm === vmId) return handoffId;
    return undefined;
  }

  private track(vm: VmInstance): void {
    this.vms.set(vm.vmId, vm);
    vm.host.onLost((reason) => {
      if (this.vms.get(vm.vmId) !== vm) return;
      this.vms.delete(vm.vmId);
      void this.recordLost(vm.vmId, reason)
        .then(() => vm.detach())
        .then(() => sweepVmFolder(vm.files.dir))
        .catch(() => undefined);
    });
  }

  private lostDir(): string {
    return join(this.config.runDir, 'lost');
  }

  private lostFile(vmId: string): string {
    return join(this.lostDir(), `${vmId}.json`);
  }

  private async recordLost(vmId: string, reason: string): Promise<void> {
    await mkdir(this.lostDir(), { recursive: true });
    await writeFile(this.lostFile(vmId), JSON.stringify({ vmId, reason, at: new Date().toISOString() }));
  }

  /** Why a VM of this cloudlet was lost, if it was (and nothing has cleared the record since). */
  async lostReason(vmId: string): Promise<string | undefined> {
    const text = await readFile(this.lostFile(vmId), 'utf8').catch(() => undefined);
    if (text === undefined) return undefined;
    return z.object({ reason: z.string() }).safeParse(JSON.parse(text)).data?.reason ?? 'unknown';
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
    return vmFiles(this.config.runDir, this.name, vmId, this.config.prefix, this.config.ramDir);
  }

  vm(vmId: string): VmInstance {
    const vm = this.vms.get(vmId);
    if (!vm) throw new HandoffError('VM_NOT_FOUND', `no VM '${vmId}' on cloudlet ${this.name}`);
    return vm;
  }

  /** Every VM this cloudlet runs (or holds stopped mid-handoff). */
  vmList(): VmInstance[] {
    return [...this.vms.values()];
  }

  hasVm(vmId: string): boolean {
    return this.vms.has(vmId);
  }

  /** A target's VM, continued here after its handoff: from now on one of this cloudlet's. */
  adopt(vm: VmInstance): void {
    this.track(vm);
  }

  /**
   * Starts the host of a VM laid out in `files` (VmInstance.layOut) with QEMU paused: from the
   * base's device state (a launch), or waiting for one (`incoming`, a handoff's target). The VM is
   * tracked here once it runs (see `adopt`).
   */
  startVm(vmId: string, base: CachedBaseImage, files: VmFiles, start: HostRecord['start']): Promise<VmInstance> {
    return VmInstance.start(vmId, this.name, base, files, start);
  }

  /**
   * Starts a VM from a cached base image and, if given, its workload; returns once the workload's
   * first heartbeat is out (a workload that loads a large state first may need a longer wait).
   */
  async launchVm(vmId: string, baseImageId: string, workload?: Workload, opts: { readyTimeoutMs?: number } = {}): Promise<VmDescription> {
    await this.refuseIfDraining(`launch VM '${vmId}'`);
    if (this.vms.has(vmId)) throw new HandoffError('VM_EXISTS', `VM '${vmId}' already runs on cloudlet ${this.name}`);
    const base = await this.images.get(baseImageId);
    const files = this.files(vmId);
    await VmInstance.layOut(files, base).catch(async (err) => {
      await sweepVmFolder(files.dir);
      throw err;
    });
    const vm = await this.startVm(vmId, base, files, { kind: 'from-device-state', deviceState: base.path('deviceState') });
    this.track(vm);
    await rm(this.lostFile(vmId), { force: true });
    // Warm what a handoff of this VM needs from its base now, so that none pays for it.
    void this.dedupIndex(base).catch(() => undefined);
    void this.basePageHashes(base).catch(() => undefined);
    try {
      await vm.host.cont();
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

  /** A VM's state here; a VM whose host died is described as `lost`, with the reason. */
  async describe(vmId: string): Promise<VmDescription> {
    const vm = this.vms.get(vmId);
    if (!vm) {
      const lost = await this.lostReason(vmId);
      if (lost === undefined) throw new HandoffError('VM_NOT_FOUND', `no VM '${vmId}' on cloudlet ${this.name}`);
      return { vmId, cloudlet: this.name, baseImageId: null, runState: 'lost', lostReason: lost, lastHeartbeat: null, dirtyDiskBlocks: 0 };
    }
    const status = await vm.host.status();
    return {
      vmId,
      cloudlet: this.name,
      baseImageId: vm.base.manifest.id,
      runState: status.runState,
      lostReason: null,
      lastHeartbeat: (await vm.serial.lastHeartbeat()) ?? null,
      dirtyDiskBlocks: status.dirtyBlocks,
    };
  }

  /**
   * A drain's mark: while set, the cloudlet takes no new VMs (launches and incoming handoffs are
   * refused). A file in the run folder, so a restarted worker keeps it.
   */
  async setDraining(draining: boolean): Promise<void> {
    if (draining) await writeFile(this.drainingFile(), new Date().toISOString());
    else await rm(this.drainingFile(), { force: true });
  }

  async isDraining(): Promise<boolean> {
    return exists(this.drainingFile());
  }

  async refuseIfDraining(what: string): Promise<void> {
    if (await this.isDraining()) throw new HandoffError('CLOUDLET_DRAINING', `cloudlet ${this.name} is being drained: it does not ${what}`);
  }

  private drainingFile(): string {
    return join(this.config.runDir, 'draining');
  }

  /** Its VMs (with QEMU's run state), its cached base images and its drain mark. */
  async state(): Promise<CloudletState> {
    const vms = await Promise.all(
      [...this.vms.values()].map(async (vm) => ({
        vmId: vm.vmId,
        baseImageId: vm.base.manifest.id,
        runState: (await vm.host.status().catch(() => undefined))?.runState ?? 'unknown',
        cpuCores: await this.vmCores(this.stateCpu, vm),
      })),
    );
    const lostVms = (await readdir(this.lostDir()).catch(() => [] as string[])).filter((f) => f.endsWith('.json')).map((f) => f.slice(0, -5));
    return { cloudlet: this.name, draining: await this.isDraining(), vms, lostVms, baseImages: await this.images.list() };
  }

  /**
   * Fetches a base image this cloudlet lacks from a peer (base-transfer.ts). Two handoffs to this
   * cloudlet that need the same base share one fetch: they would otherwise write the same files.
   */
  fetchBaseImage(baseImageId: string, peer: DataEndpoint, onProgress?: (wireBytes: number) => void, signal?: AbortSignal): Promise<BaseFetchReport> {
    const running = this.fetches.get(baseImageId);
    if (running) return running.then((r) => ({ ...r, joined: true }));
    const fetch = fetchBaseImage({ cache: this.images, baseImageId, peer, tls: this.config.tls, ...(onProgress ? { onProgress } : {}), ...(signal ? { signal } : {}) }).finally(() => this.fetches.delete(baseImageId));
    this.fetches.set(baseImageId, fetch);
    return fetch;
  }

  /** Where peers reach this cloudlet's data plane (a handoff's target, a base image's source). */
  dataEndpoint(): DataEndpoint {
    return { ...this.dataPlane.address(), cloudlet: this.name };
  }

  /** Cores each VM's QEMU kept busy since `meter` last read it (its load, see CpuMeter). */
  async vmLoads(meter: CpuMeter): Promise<Array<{ vmId: string; cpuCores: number | null }>> {
    return Promise.all([...this.vms.values()].map(async (vm) => ({ vmId: vm.vmId, cpuCores: await this.vmCores(meter, vm) })));
  }

  private async vmCores(meter: CpuMeter, vm: VmInstance): Promise<number | null> {
    const qemuPid = (await readHostPids(vm.files.dir))?.qemuPid;
    return qemuPid == null ? null : meter.coresBusy(vm.vmId, qemuPid);
  }

  /**
   * Ends a VM here for good (or clears the record of a lost one). False when there was nothing to
   * end: destroying is idempotent, so a cleanup that asks every cloudlet succeeds on each.
   */
  async destroyVm(vmId: string): Promise<boolean> {
    const vm = this.vms.get(vmId);
    if (!vm) {
      if ((await this.lostReason(vmId)) === undefined) return false;
      await rm(this.lostFile(vmId), { force: true });
      return true;
    }
    this.vms.delete(vmId);
    this.stateCpu.forget(vmId);
    await vm.destroy();
    return true;
  }
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(() => true, () => false);
}
