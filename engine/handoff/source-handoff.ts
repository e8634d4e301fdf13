import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { sentChunksFile } from '../host/host-protocol.js';
import { z } from 'zod';
import { HandoffError } from '../errors.js';
import type { Cloudlet } from '../cloudlet/cloudlet.js';
import type { VmInstance } from '../cloudlet/vm-instance.js';
import type { DataEndpoint } from '../wire/overlay-sender.js';
import { sentChunkCacheInFile, streamOverlay, type OverlayStreamResult } from './overlay-stream.js';
import { DEFAULT_PRECOPY, type PrecopyPolicy } from './precopy-policy.js';
import type { SentChunkCache } from '../pipeline/sent-chunk-cache.js';
import type { StreamControl } from './stream-control.js';
import { StoppedPageService, type StoppedPlan } from '../postcopy/stopped-page-service.js';
import { sourcePostCopyRecord, targetPostCopyRecord } from '../postcopy/postcopy-records.js';
import { pageRuns, runPages, splitChunks } from '../postcopy/plan.js';
import { MAX_POST_COPY_DISK_BLOCKS, readStoppedDiskBlocks, withDiskStopHashes } from '../postcopy/stopped-disk-blocks.js';
import { loadHash64 } from '../pipeline/checksum.js';
import { hashListedPages } from '../memory/memory-tracker.js';
import { PageHashTable } from '../memory/page-hash-table.js';
import { BLOCK_SIZE } from '../blocks.js';
import { DurableRecord } from '../durable-record.js';
import { SOURCE_PHASE_FILE, decideSourceRecovery, sourcePhaseSchema, type SourcePhase, type SourceRecovery, type TargetAnswer } from './source-phase.js';

/** What the source knows of the VM before it moves (it keeps running). */
export interface SnapshotResult {
  handoffId: string;
  vmId: string;
  baseImageId: string;
  heartbeatAtStart: number | null;
}

export type StreamResult = OverlayStreamResult;

export interface RollbackResult {
  runState: string;
  action: SourceRecovery['action'];
  reason: string;
}

/**
 * The report of the stream attempt the target acknowledged, kept beside the phase record so that
 * a retried stream activity whose first report was lost answers with it. Written and read by
 * this module only, so its `result` is not checked field by field.
 */
function streamReport(vm: VmInstance): DurableRecord<{ handoffId: string; attempt: number; result: unknown }> {
  return new DurableRecord(join(vm.files.dir, 'source-stream-report.json'), z.object({ handoffId: z.string(), attempt: z.number().int(), result: z.unknown() }));
}

/** The phase record of a VM's handoff, in the VM's folder (it lives as long as the VM here). */
export function sourcePhaseRecord(vm: VmInstance): DurableRecord<SourcePhase> {
  return new DurableRecord(join(vm.files.dir, SOURCE_PHASE_FILE), sourcePhaseSchema);
}

/**
 * The source side of a handoff: name the VM's base, stream its state live (pre-copy epochs,
 * then a short stop-and-copy), then either retire the VM or let it run on — each step declared in
 * the VM's phase record before it takes effect, so that a restarted worker, a retried stream and
 * a rollback all decide from what is written there (see decideSourceRecovery).
 */
export class SourceHandoffs {
  /** Streams running in this process, by handoff: a rollback ends them before it decides. */
  private readonly running = new Map<string, { abort: AbortController; done: Promise<unknown> }>();
  /**
   * What each handoff's attempts last sent per chunk, kept across its attempts in this process so
   * that a resumed one goes on sending re-dirtied chunks as XORs; dropped when the handoff ends here.
   */
  private readonly sentChunks = new Map<string, SentChunkCache>();
  /**
   * Post-copies this process serves, by handoff: the stopped copy's pages, until the target
   * confirmed it holds them all (see `retire`).
   */
  private readonly postCopies = new Map<string, { service: StoppedPageService; memoryDigest: Promise<string> }>();
  /** Serialises the check-and-claim of a VM by a handoff (two handoffs of one VM at once). */
  private claiming = Promise.resolve();

  constructor(private readonly cloudlet: Cloudlet) {}

  /**
   * Claims the VM for this handoff and names its base image. The VM is not stopped. Repeatable;
   * a second handoff of a VM that one holds gets VM_BUSY before it touches its target.
   */
  snapshot(handoffId: string, vmId: string): Promise<SnapshotResult> {
    const claimed = this.claiming.then(async () => {
      const vm = this.cloudlet.vm(vmId);
      const record = sourcePhaseRecord(vm);
      const held = await record.read();
      if (held && held.handoffId !== handoffId && held.phase !== 'released') {
        throw new HandoffError('VM_BUSY', `VM '${vmId}' on ${this.cloudlet.name} is held by handoff ${held.handoffId} (phase ${held.phase}); one handoff of a VM at a time`);
      }
      // A VM that came here by post-copy holds part of its memory at the last source until every
      // page is in: not a VM to move (its scan would read the holes, its dirty log would replace
      // their registration).
      const arriving = await targetPostCopyRecord(vm.files.dir).read().catch(() => undefined);
      if (arriving && !arriving.fetched) {
        throw new HandoffError('VM_BUSY', `VM '${vmId}' on ${this.cloudlet.name} is still fetching its memory from ${arriving.source} after its post-copy handoff ${arriving.handoffId}; move it once that is done`);
      }
      if (held?.handoffId !== handoffId) {
        const state = await vm.host.runState();
        if (state !== 'running') throw new HandoffError('VM_NOT_RUNNING', `VM '${vmId}' on ${this.cloudlet.name} is ${state}, not running`);
        await record.write({ handoffId, vmId, phase: 'snapshot', attempt: 0, at: new Date().toISOString() });
      }
      return { handoffId, vmId, baseImageId: vm.base.manifest.id, heartbeatAtStart: (await vm.serial.lastHeartbeat()) ?? null };
    });
    this.claiming = claimed.then(() => undefined, () => undefined);
    return claimed;
  }

  /**
   * Streams the VM to the target as attempt `attempt`; on return the VM is paused here and its
   * digests are known. An attempt after one whose commit frame left keeps the copy here stopped
   * until the target takes it: the target takes a newer attempt only if it never committed an
   * earlier one, and once it has, no earlier one can commit there (see AttemptEnds). A target that
   * refuses it, or cannot be reached, leaves the decision to the rollback. `signal` ends the
   * attempt; no commit frame leaves after it.
   */
  async stream(handoffId: string, endpoint: DataEndpoint, control: StreamControl, opts: { attempt?: number; precopy?: PrecopyPolicy; signal?: AbortSignal } = {}): Promise<StreamResult> {
    // An earlier attempt still running here (its activity timed out during an outage, say) ends
    // first, and the phase is read after it: two attempts never decide on one VM at once.
    const earlier = this.running.get(handoffId);
    if (earlier) {
      earlier.abort.abort(new Error('superseded by a newer attempt'));
      await earlier.done;
    }
    const { vm, record, phase } = await this.held(handoffId);
    const attempt = opts.attempt ?? phase.attempt + 1;
    // The commit of an earlier attempt left: if that attempt's report is here, it was
    // acknowledged and only the report was lost (a Temporal outage, a worker that died after the
    // ack): the same report again. If not, the target's answer is asked for by this attempt.
    const inDoubt = phase.phase === 'commit-sent';
    if (inDoubt) {
      const done = await streamReport(vm).read().catch(() => undefined);
      if (done?.handoffId === handoffId && done.attempt === phase.attempt) return done.result as StreamResult;
    }
    if (phase.phase === 'released') throw new HandoffError('HANDOFF_NOT_FOUND', `handoff ${handoffId} was released on ${this.cloudlet.name}; the VM runs here`);
    const sentChunks = await this.sentChunksOf(handoffId, vm, attempt, opts.precopy ?? DEFAULT_PRECOPY);
    const abort = new AbortController();
    const onCancel = () => abort.abort(opts.signal!.reason);
    opts.signal?.addEventListener('abort', onCancel, { once: true });
    const setPhase = (p: SourcePhase['phase']) => record.write({ handoffId, vmId: vm.vmId, phase: p, attempt, at: new Date().toISOString() });
    /** The copy here runs again for the live epochs (a paused VM here is an earlier attempt's stop). */
    const goLive = async () => {
      // Its pages are the running guest's from here: any post-copy of an earlier attempt is over.
      await this.endPostCopy(handoffId, vm);
      await setPhase('live');
      if ((await vm.host.runState()) !== 'running') await vm.host.cont();
    };
    const run = (async () => {
      if (!inDoubt) await goLive();
      try {
        const result = await streamOverlay({
          handoffId,
          attempt,
          vm,
          endpoint,
          tls: this.cloudlet.config.tls,
          pool: this.cloudlet.codecPool(),
          dedup: await this.cloudlet.dedupIndex(vm.base),
          basePageHashes: await this.cloudlet.basePageHashes(vm.base),
          control,
          signal: abort.signal,
          // In doubt, the copy here runs again only once the target took this attempt.
          ...(inDoubt ? { targetAccepted: goLive } : {}),
          // Not awaited: `stopped` decides as `live` does, and its fsync would hold the
          // pause back while the guest dirties more for the final epoch.
          beforePause: async () => void setPhase('stopped').catch(() => undefined),
          beforeCommit: () => setPhase('commit-sent'),
          sentChunks,
          ...(opts.precopy ? { precopy: opts.precopy } : {}),
          servePostCopy: (plan) => this.servePostCopy(handoffId, vm, endpoint.cloudlet, plan),
        });
        await streamReport(vm).write({ handoffId, attempt, result });
        // Committed: no attempt of this handoff streams again.
        await this.dropSentChunks(handoffId, vm);
        return result;
      } catch (err) {
        // Before its commit frame left, the source may put its copy back on its own; a phase it
        // cannot read is not proof of that, so the copy then stays as it is.
        const now = await record.read().catch(() => undefined);
        // Pages are served until the target confirms; before the commit left it never will.
        if (now !== undefined && now.phase !== 'commit-sent') await this.endPostCopy(handoffId, vm);
        const resumes = now !== undefined && now.phase !== 'commit-sent' && (await vm.host.runState().catch(() => 'unknown')) === 'paused';
        if (resumes) await vm.host.cont().catch(() => undefined);
        this.cloudlet.config.log?.(
          `handoff ${handoffId} attempt ${attempt} of ${vm.vmId} ended at phase ${now?.phase ?? 'unknown'}: ${(err as Error).message}${resumes ? '; the copy here runs again' : ''}`,
        );
        throw err;
      }
    })();
    const entry = { abort, done: run.catch(() => undefined) };
    this.running.set(handoffId, entry);
    try {
      return await run;
    } finally {
      opts.signal?.removeEventListener('abort', onCancel);
      if (this.running.get(handoffId) === entry) this.running.delete(handoffId);
    }
  }

  /**
   * Ends the handoff here and decides, from the VM's phase record and the target's answer alone,
   * whether the copy here runs again. A stream of this handoff still running in this process is
   * ended first. `wait-for-target` means: ask the target again, the copy stays stopped until then.
   */
  async rollback(handoffId: string, vmId: string, target: TargetAnswer): Promise<RollbackResult> {
    const streaming = this.running.get(handoffId);
    if (streaming) {
      streaming.abort.abort(new Error('the handoff is being rolled back'));
      await streaming.done;
    }
    if (!this.cloudlet.hasVm(vmId)) {
      this.forgetSentChunks(handoffId);
      const lost = await this.cloudlet.lostReason(vmId);
      return { runState: lost === undefined ? 'absent' : 'lost', action: 'nothing', reason: lost ?? `no VM '${vmId}' on ${this.cloudlet.name}` };
    }
    const vm = this.cloudlet.vm(vmId);
    const record = sourcePhaseRecord(vm);
    const phase = await record.read();
    if (phase && phase.handoffId !== handoffId) {
      // The file beside the VM is the other handoff's: only this process's cache goes.
      this.forgetSentChunks(handoffId);
      return { runState: await vm.host.runState(), action: 'nothing', reason: `the VM is held by another handoff (${phase.handoffId})` };
    }
    await this.dropSentChunks(handoffId, vm);
    const decision = decideSourceRecovery(phase, target);
    if (decision.action === 'resume-here' && phase) {
      // Its pages are the running guest's from here: a post-copy target may not have them.
      await this.endPostCopy(handoffId, vm);
      await record.write({ ...phase, phase: 'released', at: new Date().toISOString() });
      if ((await vm.host.runState()) !== 'running') await vm.host.cont();
    }
    return { runState: await vm.host.runState(), action: decision.action, reason: decision.reason };
  }

  /**
   * Ends the source copy once the target runs the VM. Safe to repeat. After a post-copy switch
   * the stopped copy holds pages the target may still lack: it goes only once the target's
   * digest of its whole memory, taken when the last page was in (`postCopyDigest`), is the
   * stopped state's.
   */
  async retire(handoffId: string, vmId: string, postCopyDigest?: string): Promise<void> {
    if (!this.cloudlet.hasVm(vmId)) return;
    const phase = await sourcePhaseRecord(this.cloudlet.vm(vmId)).read();
    if (phase?.handoffId !== handoffId || phase.phase !== 'commit-sent') {
      throw new HandoffError('PROTOCOL', `refusing to retire VM '${vmId}' on ${this.cloudlet.name}: its handoff record is ${phase ? `${phase.handoffId} in phase ${phase.phase}` : 'missing'}, not ${handoffId} with its commit frame sent`);
    }
    const vm = this.cloudlet.vm(vmId);
    const postCopyRecord = await sourcePostCopyRecord(vm.files.dir).read();
    if (postCopyRecord?.handoffId === handoffId) {
      // Served since the switch, or by a restarted worker: else the stopped copy itself says.
      const stopped = await (this.postCopies.get(handoffId)?.memoryDigest ?? this.cloudlet.codecPool().digestFile(vm.files.ramFile, vm.base.manifest.memory.sizeBytes));
      if (postCopyDigest !== stopped) {
        throw new HandoffError(
          'STATE_MISMATCH',
          `refusing to retire VM '${vmId}' on ${this.cloudlet.name}: it switched to post-copy and its stopped copy holds the pages of record; the target's memory digest ${postCopyDigest ?? '(none given)'} is not the stopped state's ${stopped}`,
        );
      }
      await this.stopServingPages(handoffId);
    }
    await this.dropSentChunks(handoffId, this.cloudlet.vm(vmId));
    await this.cloudlet.destroyVm(vmId);
  }

  /**
   * Takes up the post-copies a previous worker was serving: each VM whose commit frame left in a
   * handoff that switched to post-copy still holds the pages of record, stopped. Their stop-time
   * hashes and the whole memory's digest are read again from the stopped copy, which nothing
   * has written since the pause.
   */
  async recoverPostCopies(): Promise<string[]> {
    const taken: string[] = [];
    for (const vm of this.cloudlet.vmList()) {
      try {
        const [record, phase] = await Promise.all([sourcePostCopyRecord(vm.files.dir).read(), sourcePhaseRecord(vm).read()]);
        if (!record || phase?.handoffId !== record.handoffId || phase.phase !== 'commit-sent') continue;
        const memoryPages = vm.base.manifest.memory.sizeBytes / BLOCK_SIZE;
        // Chunks: the stale pages, then the stale disk blocks past the memory (postcopy/plan.ts).
        const pages = runPages(record.staleRuns, memoryPages + MAX_POST_COPY_DISK_BLOCKS);
        const stale = splitChunks(pages, memoryPages);
        // A new worker's view of the disk reads the overlay only for blocks it has heard of.
        await vm.disk.dirtyBlocks();
        const pool = this.cloudlet.codecPool();
        const stopHashes = Promise.all([
          hashListedPages(vm.files.ramFile, pool, stale.pages, new PageHashTable(memoryPages)),
          loadHash64().then((hash64) => readStoppedDiskBlocks(vm.disk, stale.diskBlocks, hash64)),
        ]).then(([memory, disk]) => withDiskStopHashes(memory, disk));
        const memoryDigest = pool.digestFile(vm.files.ramFile, vm.base.manifest.memory.sizeBytes);
        // Awaited by whoever needs them (the page frames, the retire); a failure must not go unhandled before.
        for (const p of [stopHashes, memoryDigest]) p.catch(() => undefined);
        await this.servePostCopy(record.handoffId, vm, record.target, { pages, stopHashes, memoryDigest, capMbps: record.capMbps ?? null });
        taken.push(`${vm.vmId} (${record.handoffId}, ${pages.length} stale pages)`);
      } catch (err) {
        this.cloudlet.config.log?.(`VM ${vm.vmId}: its post-copy could not be served again: ${(err as Error).message}`);
      }
    }
    return taken;
  }

  /**
   * Serves the stopped copy's stale pages to the handoff's target, declared in the VM's folder
   * first (before the commit leaves: a restarted worker serves them again); where they are served.
   */
  private async servePostCopy(handoffId: string, vm: VmInstance, target: string, plan: StoppedPlan): Promise<{ host: string; port: number }> {
    await this.stopServingPages(handoffId);
    await sourcePostCopyRecord(vm.files.dir).write({ handoffId, target, staleRuns: pageRuns(plan.pages), capMbps: plan.capMbps });
    const service = await StoppedPageService.open({ ramFile: vm.files.ramFile, memoryPages: vm.base.manifest.memory.sizeBytes / BLOCK_SIZE, disk: vm.disk }, plan, target);
    this.postCopies.set(handoffId, { service, memoryDigest: plan.memoryDigest });
    this.cloudlet.dataPlane.servePages(handoffId, service);
    this.cloudlet.config.log?.(`handoff ${handoffId} of ${vm.vmId}: post-copy, ${plan.pages.length} stale pages served to ${target}`);
    const { host, port } = this.cloudlet.dataEndpoint();
    return { host, port };
  }

  /** The copy here is the VM's again: no post-copy of this handoff is served, nor recorded for a restarted worker. */
  private async endPostCopy(handoffId: string, vm: VmInstance): Promise<void> {
    await this.stopServingPages(handoffId);
    await sourcePostCopyRecord(vm.files.dir).remove();
  }

  private async stopServingPages(handoffId: string): Promise<void> {
    const held = this.postCopies.get(handoffId);
    if (!held) return;
    this.postCopies.delete(handoffId);
    this.cloudlet.dataPlane.stopServingPages(handoffId);
    await held.service.close();
  }

  /**
   * The handoff's cache of what was last sent per chunk: the one this process holds, else the
   * file an earlier worker left (a resumed attempt checks it against the target's holdings), and
   * for a first attempt an empty one — what any file holds then is another handoff's.
   */
  private async sentChunksOf(handoffId: string, vm: VmInstance, attempt: number, policy: PrecopyPolicy): Promise<SentChunkCache> {
    const held = this.sentChunks.get(handoffId);
    if (held) return held;
    const file = sentChunksFile(vm.files);
    if (attempt === 1) await rm(file, { force: true });
    const cache = sentChunkCacheInFile(file, policy);
    this.sentChunks.set(handoffId, cache);
    return cache;
  }

  private async dropSentChunks(handoffId: string, vm: VmInstance): Promise<void> {
    this.forgetSentChunks(handoffId);
    await rm(sentChunksFile(vm.files), { force: true });
  }

  private forgetSentChunks(handoffId: string): void {
    this.sentChunks.get(handoffId)?.close();
    this.sentChunks.delete(handoffId);
  }

  private async held(handoffId: string): Promise<{ vm: VmInstance; record: DurableRecord<SourcePhase>; phase: SourcePhase }> {
    for (const vm of this.cloudlet.vmList()) {
      const record = sourcePhaseRecord(vm);
      const phase = await record.read().catch(() => undefined);
      if (phase?.handoffId === handoffId) return { vm, record, phase };
    }
    throw new HandoffError('HANDOFF_NOT_FOUND', `no VM on ${this.cloudlet.name} is held by handoff ${handoffId}`);
  }
}

/**
 * What a restarted worker does with a VM it re-adopted whose handoff was under way: an attempt
 * whose commit frame never left is over (its stream died with the old worker), so a guest left
 * paused by it runs again; after the commit frame left, only the target's answer may decide.
 */
export async function recoverSourceAfterRestart(vm: VmInstance): Promise<SourceRecovery> {
  const record = sourcePhaseRecord(vm);
  const phase = await record.read().catch(() => undefined);
  const decision = decideSourceRecovery(phase, 'no-answer');
  if (decision.action === 'resume-here' && phase && phase.phase !== 'released' && (await vm.host.runState()) === 'paused') {
    // A post-copy declared before the commit left never began: the copy here is the VM's again.
    await sourcePostCopyRecord(vm.files.dir).remove();
    await vm.host.cont();
  }
  return decision;
}
