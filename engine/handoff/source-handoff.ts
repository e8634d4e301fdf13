import { HandoffError } from '../errors.js';
import type { Cloudlet } from '../cloudlet/cloudlet.js';
import type { VmInstance } from '../cloudlet/vm-instance.js';
import type { DataEndpoint } from '../wire/overlay-sender.js';
import { streamOverlay, type OverlayStreamResult, type PrecopyPolicy } from './overlay-stream.js';
import type { StreamControl } from './stream-control.js';

/** What the source knows of the VM before it moves (it keeps running). */
export interface SnapshotResult {
  handoffId: string;
  vmId: string;
  baseImageId: string;
  heartbeatAtStart: number | null;
}

export type StreamResult = OverlayStreamResult;

interface Session {
  vm: VmInstance;
  snapshot: SnapshotResult;
}

/**
 * The source side of a handoff: name the VM's base, stream its state live (pre-copy epochs,
 * then a short stop-and-copy), then either retire the VM or (on any failure) let it run on.
 */
export class SourceHandoffs {
  private readonly sessions = new Map<string, Session>();

  constructor(private readonly cloudlet: Cloudlet) {}

  /** Checks the VM runs here and names its base image. The VM is not stopped. Repeatable. */
  async snapshot(handoffId: string, vmId: string): Promise<SnapshotResult> {
    const existing = this.sessions.get(handoffId);
    if (existing) return existing.snapshot;
    const vm = this.cloudlet.vm(vmId);
    const state = await vm.qemu.status();
    if (state !== 'running') throw new HandoffError('VM_NOT_RUNNING', `VM '${vmId}' on ${this.cloudlet.name} is ${state}, not running`);
    const snapshot: SnapshotResult = { handoffId, vmId, baseImageId: vm.base.manifest.id, heartbeatAtStart: (await vm.serial.lastHeartbeat()) ?? null };
    this.sessions.set(handoffId, { vm, snapshot });
    return snapshot;
  }

  /** Streams the VM to the target; on return the VM is paused here and its digests are known. */
  async stream(handoffId: string, endpoint: DataEndpoint, control: StreamControl, precopy?: PrecopyPolicy): Promise<StreamResult> {
    const s = this.session(handoffId);
    // A retried stream starts over from a running VM; the target supersedes what it had.
    if ((await s.vm.qemu.status()) !== 'running') await s.vm.qemu.cont();
    return streamOverlay({
      handoffId,
      vm: s.vm,
      endpoint,
      pool: this.cloudlet.codecPool(),
      dedup: await this.cloudlet.dedupIndex(s.vm.base),
      basePageHashes: await this.cloudlet.basePageHashes(s.vm.base),
      control,
      ...(precopy ? { precopy } : {}),
    });
  }

  /** Puts the VM back to running here. Safe to repeat, and safe when nothing was streamed. */
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
