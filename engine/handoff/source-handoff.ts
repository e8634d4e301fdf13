import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { HandoffError } from '../errors.js';
import type { Cloudlet } from '../cloudlet/cloudlet.js';
import type { VmInstance } from '../cloudlet/vm-instance.js';
import { captureMemory } from '../memory/memory-capture.js';
import type { DataEndpoint } from '../wire/overlay-sender.js';
import { streamOverlay, type OverlayStreamResult } from './overlay-stream.js';
import type { StreamControl } from './stream-control.js';
import { diskDigest } from './state-digest.js';

export interface SnapshotResult {
  handoffId: string;
  vmId: string;
  baseImageId: string;
  pausedAtMs: number;
  heartbeatAtStop: number | null;
  memoryDigest: string;
  memoryPages: number;
  diskDigest: string;
  diskBlocks: number;
  deviceStateBytes: number;
  deviceStateSha256: string;
  captureMs: number;
}

export type StreamResult = OverlayStreamResult;

interface Session {
  vm: VmInstance;
  snapshot: SnapshotResult;
  memoryPages: number[];
  diskBlocks: number[];
}

/**
 * The source side of a handoff: stop the VM and describe its state against the base, stream
 * that state to the target, then either retire the VM or (on any failure) let it run on.
 */
export class SourceHandoffs {
  private readonly sessions = new Map<string, Session>();

  constructor(private readonly cloudlet: Cloudlet) {}

  /** Pauses the VM and captures its overlay and digests. Repeating it returns the same snapshot. */
  async snapshot(handoffId: string, vmId: string): Promise<SnapshotResult> {
    const existing = this.sessions.get(handoffId);
    if (existing) return existing.snapshot;
    const vm = this.cloudlet.vm(vmId);
    const state = await vm.qemu.status();
    if (state !== 'running') throw new HandoffError('VM_NOT_RUNNING', `VM '${vmId}' on ${this.cloudlet.name} is ${state}, not running`);
    await vm.qemu.pause();
    const pausedAtMs = Date.now();
    try {
      const heartbeatAtStop = (await vm.serial.lastHeartbeat()) ?? null;
      await vm.qemu.saveDeviceState(vm.files.deviceState);
      const memory = await captureMemory(vm.files.ramFile, vm.base.path('memory'), vm.base.manifest.memory.sizeBytes);
      const deviceState = await readFile(vm.files.deviceState);
      const diskBlocks = vm.disk.dirtyBlocks();
      const snapshot: SnapshotResult = {
        handoffId,
        vmId,
        baseImageId: vm.base.manifest.id,
        pausedAtMs,
        heartbeatAtStop,
        memoryDigest: memory.digest,
        memoryPages: memory.changedPages.length,
        diskDigest: await diskDigest(vm.base, vm.disk),
        diskBlocks: diskBlocks.length,
        deviceStateBytes: deviceState.length,
        deviceStateSha256: createHash('sha256').update(deviceState).digest('hex'),
        captureMs: Date.now() - pausedAtMs,
      };
      this.sessions.set(handoffId, { vm, snapshot, memoryPages: memory.changedPages, diskBlocks });
      return snapshot;
    } catch (err) {
      await vm.qemu.cont().catch(() => undefined);
      throw err;
    }
  }

  async stream(handoffId: string, endpoint: DataEndpoint, control: StreamControl): Promise<StreamResult> {
    const s = this.session(handoffId);
    return streamOverlay({
      handoffId,
      vm: s.vm,
      memoryPages: s.memoryPages,
      diskBlocks: s.diskBlocks,
      endpoint,
      pool: this.cloudlet.codecPool(),
      dedup: await this.cloudlet.dedupIndex(s.vm.base),
      control,
    });
  }

  /** Puts the VM back to running here. Safe to repeat, and safe when no snapshot was taken. */
  async rollback(handoffId: string, vmId: string): Promise<{ runState: string }> {
    this.sessions.delete(handoffId);
    if (!this.cloudlet.hasVm(vmId)) return { runState: 'absent' };
    const vm = this.cloudlet.vm(vmId);
    const state = await vm.qemu.status();
    if (state !== 'running') await vm.qemu.cont();
    return { runState: await vm.qemu.status() };
  }

  /** Ends the source copy once the target runs the VM. Safe to repeat. */
  async retire(handoffId: string, vmId: string): Promise<void> {
    this.sessions.delete(handoffId);
    if (this.cloudlet.hasVm(vmId)) await this.cloudlet.destroyVm(vmId);
  }

  private session(handoffId: string): Session {
    const s = this.sessions.get(handoffId);
    if (!s) throw new HandoffError('HANDOFF_NOT_FOUND', `no snapshot for handoff ${handoffId} on ${this.cloudlet.name} (worker restarted?)`);
    return s;
  }
}
