import { stopTrace } from '../stop-trace.js';
import { createHash } from 'node:crypto';
import { constants, writevSync } from 'node:fs';
import { open, readFile, stat, type FileHandle } from 'node:fs/promises';
import { BLOCK_SIZE } from '../blocks.js';
import { staleDiskOf } from '../postcopy/stopped-disk-blocks.js';
import { hostDiskFill } from '../postcopy/host-disk-fill.js';
import { HandoffError } from '../errors.js';
import type { Cloudlet } from '../cloudlet/cloudlet.js';
import { VmInstance, type VmFiles } from '../cloudlet/vm-instance.js';
import { sweepVmFolder } from '../host/vm-folder-sweep.js';
import { targetSessionRecord, type TargetSessionRecord } from './target-session-record.js';
import { OwnWrites } from './own-writes.js';
import type { CachedBaseImage } from '../image/image-cache.js';
import type { DataEndpoint, PostCopyEnd, StopState } from '../wire/overlay-sender.js';
import { join } from 'node:path';
import { HOST_CONTINUED_FILE } from '../host/host-protocol.js';
import type { PostCopyFetch } from '../postcopy/page-fetcher.js';
import { recordTargetPostCopy, recoverTargetPostCopy, startTargetPostCopy } from '../postcopy/target-postcopy.js';
import type { Ack } from '../wire/frames.js';
import { AssembledMemoryDigest } from './assembled-memory-digest.js';
import { AssembledDiskDigest } from './assembled-disk-digest.js';
import { applyBatch, type ChunkStore } from '../pipeline/batch-applier.js';
import { heldBlocks, heldPages } from './reconcile.js';
import { AttemptEnds, type AttemptEnd } from './attempt-ends.js';
import { Space } from '../pipeline/chunk-records.js';
import { baseChunkReader, readRamRuns } from '../pipeline/chunk-source.js';
import type { PostCopyReport, StateDigests, TargetStopMarks } from '../contract.js';

export interface FinalizeResult extends StateDigests {
  verified: true;
  verifyMs: number;
  received: Ack;
  marks: TargetStopMarks;
}

export interface ResumeResult {
  resumedAtMs: number;
  /** When this step began: the gap from `finalize`'s end is the orchestration's hop. */
  resumeStartedAtMs: number;
  heartbeatAfter: number | null;
  /** Host time the first heartbeat after the resume arrived. */
  firstHeartbeatAtMs: number | null;
  runState: string;
}

/** What an attempt's end frame brought. */
interface ReceivedOverlay {
  ack: Ack;
  expected: StopState;
  digests: Promise<AssembledDigests>;
  /** Of the device state the end frame came with: the file QEMU loads must still be it. */
  deviceStateSha256: string;
}

interface AssembledDigests extends StateDigests {
  /** What the digests were taken of: the RAM file's mtime and the overlay's write count then. */
  stamp: { ramMtimeNs: bigint; diskWrites: number };
}

interface Session {
  vmId: string;
  /** The cloudlet the handoff comes from: a post-copy fetches its pages from there. */
  source: string;
  base: CachedBaseImage;
  files: VmFiles;
  ram: FileHandle;
  /** Whether anything but this session wrote the RAM file while frames landed. */
  ramWrites: OwnWrites;
  /** The RAM file's digest, kept current as the overlay is written. */
  ramDigest: AssembledMemoryDigest;
  /** The disk's digest, kept the same way. */
  diskDigest: AssembledDiskDigest;
  deviceState: FileHandle;
  /** Base files opened for resolving deltas and references; closed when reception ends. */
  baseFiles: FileHandle[];
  endpoint: DataEndpoint;
  /** QEMU, started when the handoff was prepared and waiting for its device state. */
  qemu: Promise<VmInstance>;
  /**
   * The attempts' end frames: the whole overlay arrived, with the source's digests at stop time
   * (`expected`) — the digests of what it assembled are being computed — and then the source's
   * commit, or not.
   */
  ends: AttemptEnds<ReceivedOverlay>;
  vm?: VmInstance;
  /** The guest's last heartbeat at the source's pause, as the overlay's end said. */
  heartbeatAtStop?: number | null;
  /** `cont` was issued: from here the VM is this cloudlet's, and only a failed start ends it. */
  resuming?: boolean;
  resumed?: ResumeResult;
}

/** The target's own part of a handoff, start to finish: what it verified, and how it resumed. */
export interface FinishResult {
  finalized: FinalizeResult;
  resumed: ResumeResult;
  /** After a post-copy switch: what was fetched once the VM ran here, up to the last page; null otherwise. */
  postCopy: PostCopyReport | null;
}

/** How long the target waits for a started guest to show it goes on. */
const CONFIRM_TIMEOUT_MS = 30_000;
/** The longest a guest on post-copy may take to beat while its pages still come. */
const POST_COPY_CONFIRM_MAX_MS = 30 * 60_000;

/**
 * The target side: accept a handoff for a base image held here, assemble memory and disk as the
 * overlay arrives, verify them against the source's digests, and only then start and resume.
 */
export class TargetHandoffs {
  private readonly sessions = new Map<string, Session>();
  /** Handoffs that resumed here, so a retried resume answers the same instead of failing. */
  private readonly completed = new Map<string, ResumeResult>();
  /** What `finish` verified, for a retried `finish` of a handoff already resumed. */
  private readonly finalized = new Map<string, FinalizeResult>();
  /** Finishes under way or done, by handoff (see `finish`). */
  private readonly finishing = new Map<string, Promise<FinishResult>>();
  /** Post-copies fetching their pages here, by handoff: `finish` waits for the last page. */
  private readonly postCopies = new Map<string, PostCopyFetch>();
  /** What each post-copy fetched, once its last page was in. */
  private readonly postCopyReports = new Map<string, PostCopyReport>();
  /** Post-copies whose VM the last worker continued here before it recorded how (see confirmGoesOn). */
  private readonly resumedBeforeRestart = new Map<string, { vm: VmInstance; heartbeatAtStop: number | null }>();
  /** Handoffs aborted here: a `prepare` still running, or arriving late, must not leave a copy. */
  private readonly aborted = new Set<string>();

  constructor(private readonly cloudlet: Cloudlet) {}

  /**
   * Base-image negotiation: succeeds only if this cloudlet holds the base; opens the data plane
   * to one peer, the source cloudlet `source` (by its certificate).
   */
  async prepare(handoffId: string, vmId: string, baseImageId: string, source: string): Promise<DataEndpoint> {
    const existing = this.sessions.get(handoffId);
    if (existing) return existing.endpoint;
    if (this.aborted.has(handoffId)) throw new HandoffError('HANDOFF_NOT_FOUND', `handoff ${handoffId} was aborted on ${this.cloudlet.name}`);
    await this.cloudlet.refuseIfDraining(`take VM '${vmId}' in`);
    if (!(await this.cloudlet.images.has(baseImageId))) {
      throw new HandoffError('BASE_IMAGE_MISSING', `cloudlet ${this.cloudlet.name} does not hold base image ${baseImageId}; install it there before handing VMs to it`);
    }
    if (this.cloudlet.hasVm(vmId)) throw new HandoffError('VM_EXISTS', `VM '${vmId}' already runs on cloudlet ${this.cloudlet.name}`);
    const base = await this.cloudlet.images.get(baseImageId);
    const files = this.cloudlet.files(vmId);
    const record: TargetSessionRecord = { handoffId, vmId, baseImageId, source, preparedAt: new Date().toISOString(), phase: 'prepared', attempt: 0 };
    try {
      await VmInstance.layOut(files, base);
      // Declared before the host starts: a restarted worker takes the session up from here.
      await targetSessionRecord(files.dir).write(record);
    } catch (err) {
      await sweepVmFolder(files.dir);
      throw err;
    }
    // QEMU starts now in the VM's host, waiting for its device state, so that its start-up
    // (process, machine, FUSE disk) is not on the stopped VM's path. It maps the RAM file but
    // does not touch it until it runs.
    const qemu = this.cloudlet.startVm(vmId, base, files, { kind: 'incoming', handoffId });
    qemu.catch(() => undefined);
    const endpoint = await this.attach({ record, base, files, qemu });
    // Aborted while this was preparing (an operator's cancel during negotiation): undo it all.
    if (this.aborted.has(handoffId)) {
      await this.discard(handoffId);
      throw new HandoffError('HANDOFF_NOT_FOUND', `handoff ${handoffId} was aborted on ${this.cloudlet.name} while it was being prepared`);
    }
    return endpoint;
  }

  /**
   * Takes up the handoffs an earlier worker of this cloudlet was receiving: each incoming copy
   * whose host survived (never continued) and whose session record is in its folder gets its
   * session back, with what it already assembled, and the data plane expects the source's next
   * attempt again under the same token. Copies without a record are ended.
   */
  async recover(): Promise<{ recovered: string[]; discarded: string[] }> {
    const recovered: string[] = [];
    const discarded: string[] = [];
    for (const incoming of this.cloudlet.takeIncoming()) {
      const record = await targetSessionRecord(incoming.vm.files.dir).read().catch(() => undefined);
      const attached =
        record && record.handoffId === incoming.handoffId && !this.sessions.has(record.handoffId)
          ? await this.attach({ record, base: incoming.vm.base, files: incoming.vm.files, qemu: Promise.resolve(incoming.vm), recovered: true }).then(
              () => true,
              () => false,
            )
          : false;
      if (!record || !attached) {
        // Never continued here, so the source still holds the VM: this copy can go.
        await incoming.vm.destroy();
        discarded.push(incoming.vm.vmId);
        continue;
      }
      // The commit is the target's: once the source's next attempt ends with a verified end
      // frame, the VM goes on here without waiting for the workflow to ask again (its retried
      // `finish` joins this one).
      // Unfinished within its bound (the source gave up while this worker was down), it goes.
      void this.finish(record.handoffId)
        .catch(() => this.discard(record.handoffId))
        .catch((err: Error) => this.cloudlet.config.log?.(`handoff ${record.handoffId}: its copy here could not be discarded: ${err.message}`));
      recovered.push(`${record.vmId} (${record.handoffId})`);
    }
    return { recovered, discarded };
  }

  /**
   * The session of one incoming copy (new or recovered): the digests kept as frames land, the
   * store frames are applied to, and the data plane's sink for this handoff.
   */
  private async attach(a: { record: TargetSessionRecord; base: CachedBaseImage; files: VmFiles; qemu: Promise<VmInstance>; recovered?: boolean }): Promise<DataEndpoint> {
    const { base, files, qemu } = a;
    const { handoffId } = a.record;
    const ram = await open(files.ramFile, 'r+');
    // Not truncated: a recovered session's device state may be the committed attempt's.
    const deviceState = await open(files.deviceState, constants.O_RDWR | constants.O_CREAT, 0o600);
    /** The phase, declared in the folder before it takes effect (see target-session-record). */
    let declared = a.record;
    const recordFile = targetSessionRecord(files.dir);
    const declare = async (next: Partial<TargetSessionRecord>) => {
      declared = { ...declared, ...next };
      await recordFile.write(declared);
    };
    const deviceStateBase = await readFile(base.path('deviceState'));
    const endpoint = this.cloudlet.dataEndpoint();
    const memoryPages = base.manifest.memory.sizeBytes / BLOCK_SIZE;
    const diskBlocks = base.manifest.disk.sizeBytes / BLOCK_SIZE;
    const disk = { dirtyBlocks: async () => (await qemu).disk.dirtyBlocks(), readBlock: async (i: number, into: Buffer) => (await qemu).disk.readBlock(i, into) };
    // The RAM file's digest is kept from then on (the full pass first), so the check at the stop
    // only re-reads what the last frames wrote. It begins once QEMU is up: a write by QEMU's own
    // start-up would be read back and fail the check, not slip past it.
    const ramDigest = new AssembledMemoryDigest(files.ramFile, memoryPages, this.cloudlet.codecPool());
    void qemu.finally(() => ramDigest.start()).catch(() => undefined);
    const assembledDisk = new AssembledDiskDigest(base, disk);
    const [baseMemory, baseDisk] = await Promise.all([open(base.path('memory'), 'r'), open(base.path('disk'), 'r')]);
    const ramWrites = await OwnWrites.watch(ram);
    /** Some attempt wrote pages or blocks (a recovered session cannot tell, so it assumes so). */
    let written = a.recovered ?? false;
    /** Batches being applied, of any connection. */
    const applying = new Set<Promise<number>>();
    const baseReader = baseChunkReader(baseMemory, base.manifest.memory.sizeBytes, baseDisk, base.manifest.disk.sizeBytes);
    const store: ChunkStore = {
      limit: (space) => (space === Space.Memory ? memoryPages : diskBlocks),
      writeRun: async (space, first, chunks) => {
        written = true;
        if (space === Space.Memory) {
          // In place, as the RAM file is read (see readRamRuns): tmpfs, page copies.
          writevSync(ram.fd, chunks, first * BLOCK_SIZE);
          ramDigest.written(first, chunks.length);
        } else {
          await (await qemu).disk.writeBlocks(first, chunks);
          for (let k = 0; k < chunks.length; k++) assembledDisk.written(first + k);
        }
      },
      batchWritten: async () => (await qemu).disk.markWritten(),
      read: async (space, indices, into) => {
        if (space === Space.Memory) return readRamRuns(ram, indices, into, base.manifest.memory.sizeBytes);
        for (const [n, i] of indices.entries()) await disk.readBlock(i, into.subarray(n * BLOCK_SIZE, (n + 1) * BLOCK_SIZE));
      },
    };
    const ends = new AttemptEnds<ReceivedOverlay>(a.record.attempt);
    // A copy that cannot start here ends the handoff here, with its cause, at once: the waiting
    // `finish` fails, and every attempt of the source is refused with a code it does not retry.
    let cannotRun: HandoffError | undefined;
    qemu.catch((err: Error) => {
      cannotRun = new HandoffError('TARGET_CANNOT_RUN', `cloudlet ${this.cloudlet.name} cannot run VM '${a.record.vmId}': ${err.message}`);
      ends.fail(cannotRun);
    });
    this.cloudlet.dataPlane.expect(handoffId, {
      source: a.record.source,
      deviceStateBase,
      begin: async (attempt) => {
        if (cannotRun) throw cannotRun;
        // A first attempt starts from the base; one that finds an earlier connection's writes
        // here must reconcile with them, which a first attempt does not: the source's next does.
        if (attempt === 1 && written) {
          throw new HandoffError('PROTOCOL', `handoff ${handoffId}: ${this.cloudlet.name} holds what an earlier connection wrote; attempt 1 cannot reconcile with it, a later attempt will`);
        }
        // Once an attempt committed, no newer one may take over; an end that still waits for
        // its commit is withdrawn by the newer attempt (its source moved on without committing).
        const refused = ends.begin(attempt);
        if (refused) throw new HandoffError('PROTOCOL', `handoff ${handoffId} on ${this.cloudlet.name}: ${refused}`);
        await declare({ phase: 'receiving', attempt, end: undefined, ack: undefined });
        if (attempt === 1) return undefined;
        // What the broken attempt got here, as it is on file now: its last batch applied (or
        // not), every page read back after its last write.
        await Promise.allSettled(applying);
        // The RAM digest's full pass begins once QEMU is up (see above).
        await qemu;
        const [memory, blocks] = await Promise.all([
          ramDigest.settle().then(async () => heldPages(ramDigest.table, (await this.cloudlet.basePageHashes(base)).sha)),
          assembledDisk.settledHashes().then(async (hashes) => heldBlocks(hashes, await base.diskBlockHashes())),
        ]);
        return { memory, disk: blocks };
      },
      // The whole state of one attempt at once, over whatever an earlier attempt wrote; its
      // SHA-256 is checked again before QEMU loads the file (see `finalize`).
      writeDeviceState: async (state) => {
        await deviceState.truncate(0);
        await deviceState.write(state, 0, state.length, 0);
      },
      applyBatch: (header, payload) => {
        if (cannotRun) throw cannotRun;
        // A batch's writes are this session's own: the file's time is read before and after
        // each batch, not each run, so the last batches do not queue two I/O-pool trips per run
        // on the stopped VM's path.
        const applied = ramWrites.write(() => applyBatch(header, payload, store, baseReader));
        // A superseded connection's batch may still be landing when the next attempt asks
        // what is held: it waits for it (see `begin`).
        applying.add(applied);
        void applied.finally(() => applying.delete(applied)).catch(() => undefined);
        return applied;
      },
      complete: async (ack, expected, attempt, deviceStateSha256) => {
        // No fsync: it would cost the stopped VM time and buy nothing — the RAM file is on
        // tmpfs, and the disk overlay's dirty set lives in this process anyway.
        // The digests complete now (the RAM file's pages written since their last hashing are
        // read back on every pool thread). Nothing writes these files after the last batch, so
        // this is what QEMU will run on.
        const digests = this.digestAssembled(files, ramDigest, assembledDisk, qemu);
        digests.catch(() => undefined);
        // Taken in at once (a newer attempt's `begin` cannot come between). Recorded, not
        // awaited: until the source's commit nothing runs on it, and a worker that dies before
        // then loses the connection it came on with it; the stopped VM does not wait for the
        // fsync. The commit's record, which does count, is written after it, in order.
        ends.ended(attempt, { ack, expected, digests, deviceStateSha256 });
        void declare({ phase: 'end-received', attempt, end: { ...expected, deviceStateSha256 }, ack }).catch(() => undefined);
      },
      granted: async (attempt) => {
        // Declared before it takes effect (the `cont` waits on it). An end withdrawn meanwhile
        // stays withdrawn, and the newer attempt's `begin` declares `receiving` after this.
        if (!ends.awaitsCommit(attempt)) return false;
        await declare({ phase: 'commit-received' });
        return ends.granted(attempt);
      },
      // A broken connection is one attempt's end, not the handoff's: the source's next attempt
      // reconnects, and the handoff's own abort (or the wait's bound) ends the wait for it. An
      // end frame it brought without its commit no longer counts.
      fail: (_err, attempt) => ends.withdraw(attempt),
    });
    this.sessions.set(handoffId, { vmId: a.record.vmId, source: a.record.source, base, files, ram, ramWrites, ramDigest, diskDigest: assembledDisk, deviceState, baseFiles: [baseMemory, baseDisk], endpoint, qemu, ends });
    // The source's commit came before the worker that took it in died: this side finishes it,
    // from the end frame it recorded (the assembled files are read back in full first).
    if (a.recovered && a.record.phase === 'commit-received' && a.record.end && a.record.ack) {
      const { deviceStateSha256, ...expected } = a.record.end;
      ends.ended(a.record.attempt, { ack: a.record.ack, expected, deviceStateSha256, digests: this.digestAssembled(files, ramDigest, assembledDisk, qemu) });
      ends.granted(a.record.attempt);
    }
    return endpoint;
  }

  /**
   * Waits for the whole overlay, checks the assembled memory and disk against the source's
   * digests at stop time (sent with the overlay's end; `expected`, when given, must agree with
   * them too), and starts QEMU paused on the verified state. A mismatch ends here. It may be
   * called as soon as the handoff is prepared: it then waits out the stream, which is how the
   * workflow keeps an orchestration hop off the stopped VM's path.
   */
  async finalize(handoffId: string, expected?: StateDigests, waitMs = 30 * 60_000): Promise<FinalizeResult> {
    const s = this.session(handoffId);
    const finalizeStartedAtMs = Date.now();
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`overlay for ${handoffId} not complete and committed after ${waitMs} ms`)), waitMs);
      timer.unref();
    });
    timedOut.catch(() => undefined);
    try {
      // An end whose attempt broke before the source committed to it does not count: the next
      // attempt's end is waited for (the source may have run its copy again meanwhile).
      for (;;) {
        const end = await Promise.race([s.ends.next(), timedOut]);
        // QEMU (up since `prepare`) loads the device state, paused, once the source committed,
        // while the digests are checked; it runs only after `resume`, and only if they matched.
        const starting = end.committed.then(async (committed) => {
          if (!committed) return undefined;
          if (s.vm) return s.vm;
          await Promise.allSettled([s.ram.close(), s.deviceState.close(), ...s.baseFiles.map((f) => f.close())]);
          const onFile = createHash('sha256').update(await readFile(s.files.deviceState)).digest('hex');
          if (onFile !== end.value.deviceStateSha256) {
            throw new HandoffError('STATE_MISMATCH', `the device state on file at ${this.cloudlet.name} is not the one attempt ${end.attempt} sent; the VM was not resumed here`);
          }
          const vm = await s.qemu;
          // After a post-copy switch the stale pages become holes first, and that waits for the
          // verdict on what is held (see `verify`): the device state loads after.
          if (end.value.expected.postCopy) return vm;
          stopTrace('dst load device state');
          await vm.host.loadDeviceState(s.files.deviceState);
          stopTrace('dst device state loaded');
          return vm;
        });
        starting.catch(() => undefined);
        // The check runs while the commit crosses the link; its verdict counts only once the
        // commit came (an end withdrawn meanwhile may have been checked against a newer
        // attempt's writes).
        const checked = this.examine(s, end);
        checked.catch(() => undefined);
        if (!(await Promise.race([end.committed, timedOut]))) continue;
        return await this.verify(handoffId, s, end, checked, starting, expected, finalizeStartedAtMs);
      }
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * The assembled memory and disk's digests, read again in full where anything but this session
   * wrote them (while frames landed, or since the last one), with what they were taken of.
   */
  private async examine(s: Session, end: AttemptEnd<ReceivedOverlay>): Promise<AssembledDigests & { verifyMs: number }> {
    const started = Date.now();
    let assembled = await end.value.digests;
    if (s.ramWrites.foreign || (await this.movedSince(s, assembled.stamp))) assembled = await this.rehashed(s);
    return { ...assembled, verifyMs: Date.now() - started };
  }

  /** The digests of the assembled files read again in full. */
  private async rehashed(s: Session): Promise<AssembledDigests> {
    s.ramDigest.rehashAll();
    await s.diskDigest.rehashAll();
    return this.digestAssembled(s.files, s.ramDigest, s.diskDigest, s.qemu);
  }

  /** Whether the RAM file or the disk overlay were written after `stamp` was taken. */
  private async movedSince(s: Session, stamp: AssembledDigests['stamp']): Promise<boolean> {
    return (await stat(s.files.ramFile, { bigint: true })).mtimeNs !== stamp.ramMtimeNs || (await (await s.qemu).disk.writeCount()) !== stamp.diskWrites;
  }

  /** The committed end's verdict: the assembled state against the digests the source stopped with. */
  private async verify(
    handoffId: string,
    s: Session,
    end: AttemptEnd<ReceivedOverlay>,
    checked: Promise<AssembledDigests & { verifyMs: number }>,
    starting: Promise<VmInstance | undefined>,
    expected: StateDigests | undefined,
    finalizeStartedAtMs: number,
  ): Promise<FinalizeResult> {
    const { ack: received, expected: sent } = end.value;
    let assembled = await checked;
    stopTrace('dst checked');
    // Checked before the commit came: anything written since is read again.
    if (s.ramWrites.foreign || (await this.movedSince(s, assembled.stamp))) {
      const started = Date.now();
      assembled = { ...(await this.rehashed(s)), verifyMs: assembled.verifyMs + Date.now() - started };
    }
    const { memoryDigest, verifyMs } = assembled;
    let disk = assembled.diskDigest;
    // A post-copy's stale disk blocks are not here yet: the disk is checked as it will be once
    // they are, with the SHA-256s the source stopped with in their place (each block is checked
    // against its own on arrival).
    const staleDisk = sent.postCopy?.staleDisk;
    if (staleDisk) {
      try {
        disk = await s.diskDigest.settleWith(staleDiskOf(staleDisk, s.base.manifest.disk.sizeBytes / BLOCK_SIZE).sha256);
      } catch (err) {
        await starting.catch(() => undefined);
        await this.discard(handoffId);
        throw err;
      }
    }
    const wrong = (e: StateDigests) => [memoryDigest !== e.memoryDigest && 'memory', disk !== e.diskDigest && 'disk'].filter(Boolean).join(' and ');
    const which = wrong(sent) || (expected ? wrong(expected) : '');
    if (which) {
      await starting.catch(() => undefined);
      await this.discard(handoffId);
      throw new HandoffError('STATE_MISMATCH', `assembled ${which} on ${this.cloudlet.name} do not match the source's digests at stop time; the VM was not resumed here`);
    }
    const verifiedAtMs = Date.now();
    stopTrace('dst verified');
    s.vm = await starting;
    s.heartbeatAtStop = sent.heartbeatAtStop;
    const finalized: FinalizeResult = { memoryDigest, diskDigest: disk, verified: true, verifyMs, received, marks: { receivedAtMs: end.at, finalizeStartedAtMs, verifiedAtMs } };
    if (sent.postCopy && s.vm) await this.startPostCopy(handoffId, s, s.vm, sent.postCopy, finalized);
    return finalized;
  }

  /**
   * A post-copy switch, the held state verified: the stale pages become holes, QEMU's RAM is
   * registered with the fault server and the fetch from the source begins; then the device state
   * loads (its faults are the first served).
   */
  private async startPostCopy(handoffId: string, s: Session, vm: VmInstance, end: PostCopyEnd, finalized: FinalizeResult): Promise<void> {
    const { qemuPid } = await vm.host.status();
    if (qemuPid === null) throw new HandoffError('TARGET_CANNOT_RUN', `the QEMU of VM '${s.vmId}' on ${this.cloudlet.name} is gone`);
    const { fetch, heldSaved } = await startTargetPostCopy({
      ...this.postCopyPlace(handoffId, vm, qemuPid),
      source: s.source, end, held: s.ramDigest.table, finalized, heartbeatAtStop: s.heartbeatAtStop ?? null,
    });
    this.fetching(handoffId, s.files.dir, fetch);
    stopTrace('dst post-copy serving');
    await Promise.all([vm.host.loadDeviceState(s.files.deviceState), heldSaved]);
    stopTrace('dst device state loaded');
  }

  /**
   * Takes up the post-copies a previous worker of this cloudlet was fetching: each VM that runs
   * here (re-adopted from its host) with a post-copy record fetches what it still lacks, and a
   * retried `finish` of its handoff answers from the record once the last page is in.
   */
  async recoverPostCopies(): Promise<string[]> {
    const taken: string[] = [];
    for (const vm of this.cloudlet.vmList()) {
      const handoffId = this.cloudlet.handoffOf(vm.vmId);
      if (handoffId === undefined) continue;
      try {
        const { qemuPid } = await vm.host.status();
        if (qemuPid === null) continue;
        const recovered = await recoverTargetPostCopy(this.postCopyPlace(handoffId, vm, qemuPid));
        if (!recovered) continue;
        const { record, fetch } = recovered;
        this.finalized.set(handoffId, record.finalized as FinalizeResult);
        if (record.resumed) this.completed.set(handoffId, record.resumed as ResumeResult);
        // Continued by the last worker (its host says so), which died before it confirmed the guest went on.
        else this.resumedBeforeRestart.set(handoffId, { vm, heartbeatAtStop: record.heartbeatAtStop });
        if (record.fetched) this.postCopyReports.set(handoffId, record.fetched);
        if (fetch) this.fetching(handoffId, vm.files.dir, fetch);
        taken.push(`${vm.vmId} (${handoffId}${fetch ? ', fetching' : ', done'})`);
      } catch (err) {
        this.cloudlet.config.log?.(`VM ${vm.vmId}: its post-copy could not be taken up: ${(err as Error).message}`);
      }
    }
    return taken;
  }

  private postCopyPlace(handoffId: string, vm: VmInstance, qemuPid: number) {
    const { files, base } = vm;
    return {
      handoffId, vmDir: files.dir, ramFile: files.ramFile, qemuPid, memoryPages: base.manifest.memory.sizeBytes / BLOCK_SIZE,
      diskBlocks: base.manifest.disk.sizeBytes / BLOCK_SIZE, disk: hostDiskFill(vm.host), tls: this.cloudlet.config.tls, ...(this.cloudlet.config.log ? { log: this.cloudlet.config.log } : {}),
    };
  }

  /** A fetch under way: `finish` waits for it; its report, once in, is recorded for a retried `finish`. */
  private fetching(handoffId: string, vmDir: string, fetch: PostCopyFetch): void {
    this.postCopies.set(handoffId, fetch);
    void fetch.done.then(async (report) => {
      this.postCopyReports.set(handoffId, report);
      this.postCopies.delete(handoffId);
      await recordTargetPostCopy(vmDir, { fetched: report });
    }).catch((err: Error) => this.cloudlet.config.log?.(`handoff ${handoffId}: the post-copy fetch ended: ${err.message}`));
  }

  /** What a post-copy of this handoff fetched (waiting for its last page); null where there was none. */
  private async postCopyOf(handoffId: string): Promise<PostCopyReport | null> {
    const fetch = this.postCopies.get(handoffId);
    if (fetch) return fetch.done;
    return this.postCopyReports.get(handoffId) ?? null;
  }

  /**
   * `finalize`, then `resume` at once on the verified state — the commit is the target's, as in
   * libvirt's Finish phase: once the assembled state matches the digests the source stopped with,
   * nothing is left to decide, and an orchestration round trip here would be downtime. The
   * source stays paused until it is retired; `abort` no longer undoes a VM this has continued.
   */
  finish(handoffId: string, waitMs?: number): Promise<FinishResult> {
    const done = this.completed.get(handoffId);
    const verified = this.finalized.get(handoffId);
    if (done && verified) return this.postCopyOf(handoffId).then((postCopy) => ({ finalized: verified, resumed: done, postCopy }));
    // One finish per handoff: a retried activity (its worker's heartbeats were lost, say) joins
    // the one in flight, and gets its answer, instead of racing it.
    let finishing = this.finishing.get(handoffId);
    if (!finishing) {
      finishing = (async () => {
        // A post-copy the last worker of this cloudlet continued here: its record answers.
        const before = this.resumedBeforeRestart.get(handoffId);
        if (verified && before) {
          // Its guest may still wait on pages (the source not serving yet): a retry asks again.
          const resumed = await this.confirmGoesOn(handoffId, before.vm, before.heartbeatAtStop).catch((err: unknown) => {
            this.finishing.delete(handoffId);
            throw err;
          });
          return { finalized: verified, resumed, postCopy: await this.postCopyOf(handoffId) };
        }
        const finalized = await this.finalize(handoffId, undefined, waitMs);
        this.finalized.set(handoffId, finalized);
        const { files } = this.session(handoffId);
        const resumed = await this.resume(handoffId, this.session(handoffId).heartbeatAtStop ?? null);
        // After a post-copy switch the VM runs here on pages still coming: done once the last is
        // in. A retried `finish` on a restarted worker answers from the record.
        if (this.postCopies.has(handoffId) || this.postCopyReports.has(handoffId)) await recordTargetPostCopy(files.dir, { resumed });
        return { finalized, resumed, postCopy: await this.postCopyOf(handoffId) };
      })();
      finishing.catch(() => undefined);
      this.finishing.set(handoffId, finishing);
    }
    return finishing;
  }

  /**
   * A VM the last worker continued here before it could confirm its guest went on: confirmed now
   * (its first heartbeat past the stop's), and recorded.
   */
  private async confirmGoesOn(handoffId: string, vm: VmInstance, heartbeatAtStop: number | null): Promise<ResumeResult> {
    const hb = heartbeatAtStop === null ? undefined : await this.firstBeatAbove(handoffId, vm, heartbeatAtStop);
    const runState = await vm.host.runState();
    if (runState !== 'running') throw new HandoffError('GUEST_DID_NOT_CONTINUE', `VM ${vm.vmId} did not go on at ${this.cloudlet.name}: run state is ${runState}`);
    // The resume happened under the last worker: its host wrote this file just before `cont`.
    const continuedAtMs = Math.round((await stat(join(vm.files.dir, HOST_CONTINUED_FILE))).mtimeMs);
    const resumed: ResumeResult = { resumedAtMs: continuedAtMs, resumeStartedAtMs: continuedAtMs, heartbeatAfter: hb?.counter ?? null, firstHeartbeatAtMs: hb?.atMs ?? null, runState };
    this.completed.set(handoffId, resumed);
    this.resumedBeforeRestart.delete(handoffId);
    await recordTargetPostCopy(vm.files.dir, { resumed });
    return resumed;
  }

  /**
   * The guest's first heartbeat past `above`, within CONFIRM_TIMEOUT_MS. A guest on post-copy
   * beats once the pages it needs are in, which a slow or cut link may hold back for long (its
   * vCPUs wait in their faults): its bound counts from the last page in, and a fetch that fails
   * fails the wait.
   */
  private firstBeatAbove(handoffId: string, vm: VmInstance, above: number): Promise<{ counter: number; atMs: number }> {
    const fetch = this.postCopies.get(handoffId);
    if (!fetch) return vm.heartbeats.next(above, CONFIRM_TIMEOUT_MS);
    const beat = vm.heartbeats.next(above, POST_COPY_CONFIRM_MAX_MS);
    const afterLastPage = fetch.done.then(() => vm.heartbeats.next(above, CONFIRM_TIMEOUT_MS));
    for (const p of [beat, afterLastPage]) p.catch(() => undefined);
    return Promise.race([beat, afterLastPage]);
  }

  /** Continues the verified VM and confirms the guest goes on past its last heartbeat at stop. */
  async resume(handoffId: string, heartbeatAtStop: number | null): Promise<ResumeResult> {
    const done = this.completed.get(handoffId);
    if (done) return done;
    const resumeStartedAtMs = Date.now();
    const s = this.session(handoffId);
    if (!s.vm) throw new HandoffError('HANDOFF_NOT_FOUND', `handoff ${handoffId} was not finalized on ${this.cloudlet.name}`);
    // Set before the first await: an abort arriving from here on finds the VM committed here.
    // If it does not start after all, it is discarded here and the source may run it again.
    s.resuming = true;
    let resumedAtMs = 0;
    let heartbeatAfter: number | null = null;
    let firstHeartbeatAtMs: number | null = null;
    try {
      stopTrace('dst cont');
      await s.vm.host.cont();
      stopTrace('dst cont done');
      resumedAtMs = Date.now();
      if (heartbeatAtStop !== null) {
        const hb = await this.firstBeatAbove(handoffId, s.vm, heartbeatAtStop);
        heartbeatAfter = hb.counter;
        firstHeartbeatAtMs = hb.atMs;
      }
      const runState = await s.vm.host.runState();
      if (runState !== 'running') throw new Error(`run state is ${runState}`);
      s.resumed = { resumedAtMs, resumeStartedAtMs, heartbeatAfter, firstHeartbeatAtMs, runState };
    } catch (err) {
      await this.discard(handoffId);
      throw new HandoffError('GUEST_DID_NOT_CONTINUE', `VM ${s.vmId} did not go on at ${this.cloudlet.name}: ${(err as Error).message}`);
    }
    s.ramDigest.close();
    s.diskDigest.close();
    this.cloudlet.adopt(s.vm);
    this.cloudlet.dataPlane.forget(handoffId);
    this.sessions.delete(handoffId);
    this.completed.set(handoffId, s.resumed);
    return s.resumed;
  }

  /**
   * The canonical digests of the assembled memory and disk, from their real bytes read back
   * (see AssembledMemoryDigest, AssembledDiskDigest), with what they were taken of.
   */
  private async digestAssembled(files: VmFiles, ramDigest: AssembledMemoryDigest, diskDigest: AssembledDiskDigest, vm: Promise<VmInstance>): Promise<AssembledDigests> {
    // Taken before the last reading: on tmpfs a later write gets a distinct fine-grained timestamp.
    const stamp = { ramMtimeNs: (await stat(files.ramFile, { bigint: true })).mtimeNs, diskWrites: await (await vm).disk.writeCount() };
    const [memoryDigest, diskDigestValue] = await Promise.all([ramDigest.settle(), diskDigest.settle()]);
    return { memoryDigest, diskDigest: diskDigestValue, stamp };
  }

  /**
   * Ends the handoff here unless the VM was continued here (`resumed: true`: it now runs here,
   * or is starting; the source must not run it again). Safe to repeat.
   */
  async abort(handoffId: string): Promise<{ resumed: boolean }> {
    if (this.completed.has(handoffId) || this.sessions.get(handoffId)?.resuming) return { resumed: true };
    // Continued here by an earlier worker of this cloudlet, and re-adopted from its host.
    if (this.cloudlet.committedHandoff(handoffId) !== undefined) return { resumed: true };
    this.aborted.add(handoffId);
    await this.discard(handoffId);
    return { resumed: false };
  }

  /** Discards everything this handoff created here, a VM started from it included. Safe to repeat. */
  private async discard(handoffId: string): Promise<void> {
    const s = this.sessions.get(handoffId);
    if (!s) return;
    this.sessions.delete(handoffId);
    this.cloudlet.dataPlane.forget(handoffId);
    s.ramDigest.close();
    s.diskDigest.close();
    s.ends.fail(new HandoffError('HANDOFF_NOT_FOUND', `handoff ${handoffId} was aborted on ${this.cloudlet.name}`));
    this.postCopies.get(handoffId)?.abort(new HandoffError('HANDOFF_NOT_FOUND', `handoff ${handoffId} was discarded on ${this.cloudlet.name}`));
    this.postCopies.delete(handoffId);
    await Promise.allSettled([s.ram.close(), s.deviceState.close(), ...s.baseFiles.map((f) => f.close())]);
    const vm = s.vm ?? (await s.qemu.catch(() => undefined));
    if (vm) await vm.destroy();
    else await sweepVmFolder(s.files.dir);
  }

  private session(handoffId: string): Session {
    const s = this.sessions.get(handoffId);
    if (!s) throw new HandoffError('HANDOFF_NOT_FOUND', `no handoff ${handoffId} in progress on ${this.cloudlet.name} (worker restarted?)`);
    return s;
  }
}
