import { writeSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { connect, type TLSSocket } from 'node:tls';
import { setTimeout as sleep } from 'node:timers/promises';
import { BLOCK_SIZE } from '../blocks.js';
import { HandoffError } from '../errors.js';
import type { PostCopyReport } from '../contract.js';
import type { PageHashTable } from '../memory/page-hash-table.js';
import { loadHash64 } from '../pipeline/checksum.js';
import { zstdBounded } from '../pipeline/codecs.js';
import { expectCloudlet, type CloudletTls } from '../wire/cloudlet-tls.js';
import { FrameDecoder, FrameType, WIRE_PROTOCOL, WIRE_VERSION, encodeFrame, type Frame, type PageChannel, type PagesPayload } from '../wire/frames.js';
import type { DataEndpoint } from '../wire/overlay-sender.js';
import { FaultServer, nativePostCopy } from './fault-server.js';
import { blockHash, isZeroBlock } from '../image/image-digest.js';
import { chunkOfDiskBlock, chunksOf, lowerBound, pageRuns, planPosition, runPages, splitChunks, type PostCopyPlan } from './plan.js';

/** Arrivals of one page that fail its hash before the fetch gives up (the guest stays frozen on it; the source keeps its copy). */
const MAX_REFUSALS = 5;

/** A chunk's state in `arrived`: 0 still to come, CLAIMED checked and being put in, ARRIVED in. */
const CLAIMED = 2;
const ARRIVED = 1;

/** A journal record: u32 page index, its SHA-256. */
export const ARRIVED_RECORD_BYTES = 36;

/** How long a page channel's connection may take. */
const CONNECT_TIMEOUT_MS = 10_000;

/** How long a broken page channel waits before it connects again. */
const RECONNECT_DELAY_MS = 1_000;

/** How long a push the source ended waits for pages still on their way on the fault channel before it asks again. */
const IN_FLIGHT_GRACE_MS = 2_000;

/**
 * The target's side of a post-copy: the pages the switch left stale are holes in the RAM file
 * (punched here, or already there for a restarted worker), QEMU's faults on them are served by the
 * fault server, and the pages come from the stopped source over two channels of its data plane:
 * faults are asked for on one, answered ahead of the background push on the other. Each page is
 * checked against its stop-time hash before the fault server puts it in; one that does not match
 * is refused and asked for again. A channel that breaks (a cut link) is opened again, and a guest
 * that faults meanwhile waits (its vCPU is frozen in the fault) until its page comes.
 */
export class PostCopyFetch {
  private readonly arrived: Uint8Array;
  private left: number;
  private readonly asked = new Map<number, number>();
  private readonly latencies: number[] = [];
  private refused = 0;
  /** Disk blocks the guest waited on, asked for on the fault channel. */
  private diskFaults = 0;
  private reconnects = 0;
  private bytesReceived = 0;
  private readonly started = Date.now();
  private faultSocket?: TLSSocket;
  private pushSocket?: TLSSocket;
  /** Times each page was refused on arrival: a page that keeps failing its hash is not asked for forever. */
  private readonly refusals = new Map<number, number>();
  private readonly finished = new AbortController();
  private allIn!: () => void;
  private readonly allInPromise = new Promise<void>((resolve) => (this.allIn = resolve));
  private failed?: (err: Error) => void;
  /** Resolves with the report once every page is in and the fault server unregistered. */
  readonly done: Promise<PostCopyReport>;

  private constructor(
    private readonly o: PostCopyFetchOptions,
    private readonly server: FaultServer,
    private readonly hash64: (data: Uint8Array) => bigint,
    missing: Uint32Array,
  ) {
    this.arrived = new Uint8Array(o.plan.pages.length).fill(1);
    for (const i of missing) this.arrived[planPosition(o.plan, i)] = 0;
    this.left = missing.length;
    this.done = this.run();
    this.done.catch(() => undefined);
  }

  /**
   * Makes the plan's pages holes (unless `recovering`: then the holes left are what is still to
   * come), registers QEMU's RAM with the fault server and starts fetching. Resolves once the fault
   * server serves: QEMU may then load its device state and run.
   */
  static async start(o: PostCopyFetchOptions): Promise<PostCopyFetch> {
    const { ramHoles } = nativePostCopy();
    const stale = splitChunks(o.plan.pages, o.memoryPages);
    if (stale.diskBlocks.length > 0 && !o.disk) throw new HandoffError('PROTOCOL', `the post-copy names ${stale.diskBlocks.length} disk blocks, and this fetch has no disk to fill`);
    const ram = await open(o.ramFile, 'r+');
    let missing: Uint32Array;
    try {
      if (!o.recovering) ramHoles.punchHoles(ram.fd, Uint32Array.from(pageRuns(stale.pages).flat()));
      const holes = ramHoles.holes(ram.fd, o.memoryPages);
      const runs: Array<[number, number]> = [];
      for (let k = 0; k + 1 < holes.length; k += 2) runs.push([holes[k]!, holes[k + 1]!]);
      const pages = runPages(runs, stale.pages.length);
      // The disk's stale blocks: missing at the VM host from now on (its reads of them wait), or
      // for a restarted worker, what the host still lacks.
      // (Fresh, that is the plan's: no round trip to ask back on the stop's path.)
      let blocks: ArrayLike<number> = [];
      if (o.disk && stale.diskBlocks.length > 0) {
        if (o.recovering) blocks = await o.disk.host.missingBlocks();
        else {
          await o.disk.host.markMissing([...stale.diskBlocks]);
          blocks = stale.diskBlocks;
        }
      }
      missing = chunksOf(pages, blocks, o.memoryPages);
      for (const i of missing) {
        if (planPosition(o.plan, i) < 0) throw new HandoffError('STATE_MISMATCH', i < o.memoryPages ? `page ${i} of ${o.ramFile} is a hole the post-copy plan does not name` : `disk block ${i - o.memoryPages} is missing at the VM host and the post-copy plan does not name it`);
      }
    } finally {
      await ram.close();
    }
    let fetch: PostCopyFetch | undefined;
    const early: number[] = [];
    const server = await FaultServer.start(o.qemuPid, o.ramFile, (page) => (fetch ? fetch.faulted(page) : early.push(page)));
    fetch = new PostCopyFetch(o, server, await loadHash64(), missing);
    for (const page of early) fetch.faulted(page);
    return fetch;
  }

  /** Stops fetching, with QEMU's RAM still registered: whoever started this ends that QEMU or serves it again. */
  abort(why: Error): void {
    this.failed?.(why);
  }

  private async run(): Promise<PostCopyReport> {
    const failure = new Promise<never>((_, reject) => (this.failed = reject));
    failure.catch(() => undefined);
    // A fault server gone before its end leaves vCPUs waiting on holes: the fetch fails loudly.
    void this.server.exited.then((code) => !this.finished.signal.aborted && this.failed?.(new HandoffError('TARGET_CANNOT_RUN', `the post-copy fault server exited (${code}) with pages still to come`)));
    try {
      if (this.left > 0) {
        const channels = Promise.all([this.keepChannel('fault'), this.keepChannel('push')]);
        channels.catch(() => undefined);
        if (this.o.disk) void this.askForDemandedBlocks(this.o.disk.host);
        await Promise.race([this.allInPromise, failure, channels.then(() => this.allInPromise)]);
      }
      this.finished.abort();
      this.faultSocket?.end();
      const served = await Promise.race([this.server.finish(), failure]);
      // Every block in or written whole by the guest since: none may still be missing at the host.
      const leftOnDisk = this.o.disk ? await this.o.disk.host.missingBlocks() : [];
      if (leftOnDisk.length > 0) throw new HandoffError('STATE_MISMATCH', `with every chunk in, the VM host still lacks ${leftOnDisk.length} disk blocks (the first: ${leftOnDisk[0]})`);
      const memoryDigest = this.o.held ? this.o.held.table.digest() : null;
      if (this.o.held?.expectedDigest !== undefined && memoryDigest !== this.o.held.expectedDigest) {
        throw new HandoffError('STATE_MISMATCH', `with every page in, the memory's digest is ${memoryDigest}, not the stopped state's ${this.o.held.expectedDigest}`);
      }
      const sorted = [...this.latencies].sort((a, b) => a - b);
      return {
        pages: this.o.plan.pages.length - this.diskChunks, diskBlocks: this.diskChunks, remoteFaults: served.faults + this.diskFaults, refused: this.refused, reconnects: this.reconnects, bytesReceived: this.bytesReceived,
        faultLatencyMedianMs: sorted.length ? sorted[Math.floor(sorted.length / 2)]! : null, faultLatencyMaxMs: sorted.at(-1) ?? null,
        ms: Date.now() - this.started, memoryDigest,
      };
    } catch (err) {
      this.finished.abort();
      this.faultSocket?.destroy();
      this.pushSocket?.destroy();
      this.server.kill();
      throw err;
    }
  }

  /** Disk blocks among the plan's chunks (they follow its pages). */
  private get diskChunks(): number {
    return this.o.plan.pages.length - lowerBound(this.o.plan.pages, this.o.memoryPages);
  }

  /**
   * Relays the disk blocks the guest waits on (its reads of missing blocks block in the VM host's
   * FUSE layer) to the fault channel, until the fetch ends. A host that does not answer is asked
   * again: its waiting reads are asked for by the push meanwhile.
   */
  private async askForDemandedBlocks(host: DiskFill): Promise<void> {
    while (!this.finished.signal.aborted) {
      const blocks = await host.awaitDemand(DEMAND_WAIT_MS).catch(async () => {
        await sleep(RECONNECT_DELAY_MS, undefined, { signal: this.finished.signal }).catch(() => undefined);
        return [] as number[];
      });
      for (const b of blocks) {
        const chunk = chunkOfDiskBlock(b, this.o.memoryPages);
        const at = planPosition(this.o.plan, chunk);
        if (at >= 0 && !this.arrived[at] && !this.asked.has(chunk)) this.diskFaults++;
        this.faulted(chunk);
      }
    }
  }

  /** A disk chunk's bytes against the SHA-256 the source stopped with (a memory page has no such check here: true). */
  private asStopped(chunk: number, bytes: Buffer): boolean {
    if (chunk < this.o.memoryPages) return true;
    const want = this.o.disk?.sha256.get(chunk - this.o.memoryPages);
    if (want === undefined) return false;
    return want === null ? isZeroBlock(bytes) : blockHash(bytes).equals(want);
  }

  /** A page a fault waits on: asked for at once, unless it is on its way already. */
  private faulted(page: number): void {
    const at = planPosition(this.o.plan, page);
    if (at < 0) return this.failed?.(new HandoffError('STATE_MISMATCH', `the guest faulted on page ${page}, which the post-copy plan does not name`));
    if (this.arrived[at] || this.asked.has(page)) return;
    this.asked.set(page, Date.now());
    this.faultSocket?.write(encodeFrame({ type: FrameType.PageRequest, request: { runs: [[page, 1]] } }));
  }

  /**
   * Keeps one channel open until every page is in: the fault channel asks again for what it
   * asked and did not get; the push channel asks for everything still missing, in order.
   */
  private async keepChannel(channel: PageChannel): Promise<void> {
    for (let first = true, broke = false; !this.finished.signal.aborted; first = false) {
      if (broke) {
        this.reconnects++;
        await sleep(RECONNECT_DELAY_MS, undefined, { signal: this.finished.signal }).catch(() => undefined);
        if (this.finished.signal.aborted) return;
      } else if (!first && channel === 'push') {
        // A push the source ended with pages still to come: those on their way on the fault
        // channel (pre-paged behind a fault) get a moment to land before a new push asks again.
        await this.inFlightLanded();
        if (this.finished.signal.aborted || this.allArrivedOrAsked()) return;
      }
      broke = false;
      try {
        const socket = await this.connect(channel);
        const decoder = new FrameDecoder();
        decoder.on('error', () => undefined);
        // A source that ends the channel (FIN) lets the frames already here be taken; only a
        // channel that breaks drops them.
        let ended = false;
        socket.once('end', () => (ended = true));
        socket.on('error', (err) => decoder.destroy(err));
        socket.on('close', () => !ended && decoder.destroy());
        socket.pipe(decoder);
        if (channel === 'push') this.pushSocket = socket;
        if (channel === 'fault') {
          this.faultSocket = socket;
          if (this.asked.size) socket.write(encodeFrame({ type: FrameType.PageRequest, request: { runs: pageRuns([...this.asked.keys()].sort((a, b) => a - b)) } }));
        } else {
          const missing = this.o.plan.pages.filter((_, at) => !this.arrived[at]);
          socket.write(encodeFrame({ type: FrameType.PageRequest, request: { runs: pageRuns(missing) } }));
        }
        for await (const f of decoder as AsyncIterable<Frame>) {
          // A source whose worker restarts serves the pages again once it is back: asked again.
          if (f.type === FrameType.Error) throw new HandoffError('PROTOCOL', `the source refused the post-copy ${channel} channel: ${f.error.message}`);
          if (f.type !== FrameType.Pages) throw new HandoffError('PROTOCOL', `unexpected frame type ${f.type} on the post-copy ${channel} channel`);
          await this.take(f.pages, channel);
        }
        // The source ends the push channel once it sent everything asked for. Pages still
        // missing then are on their way by faults, or were refused and asked for again; any
        // other (a push cut short by a close without an error) is asked for by a new push.
        if (channel === 'push' && this.allArrivedOrAsked()) return;
      } catch (err) {
        if (this.finished.signal.aborted) return;
        broke = true;
        this.o.log?.(`post-copy ${channel} channel of ${this.o.handoffId} broke: ${(err as Error).message}; connecting again`);
      }
    }
  }

  private allArrivedOrAsked(): boolean {
    return this.o.plan.pages.every((page, at) => this.arrived[at] || this.asked.has(page));
  }

  /** Waits until every chunk still missing is asked for by a fault, or IN_FLIGHT_GRACE_MS passed, or the fetch ended. */
  private async inFlightLanded(): Promise<void> {
    const until = Date.now() + IN_FLIGHT_GRACE_MS;
    while (!this.finished.signal.aborted && Date.now() < until && !this.allArrivedOrAsked()) {
      await sleep(50, undefined, { signal: this.finished.signal }).catch(() => undefined);
    }
  }

  private connect(channel: PageChannel): Promise<TLSSocket> {
    const { source, tls } = this.o;
    const socket = connect({ host: source.host, port: source.port, cert: tls.cert, key: tls.key, ca: tls.ca, minVersion: 'TLSv1.3', checkServerIdentity: expectCloudlet(source.cloudlet) });
    // A handshake into a cut link is given up and tried again, not waited on for minutes.
    socket.setTimeout(CONNECT_TIMEOUT_MS, () => socket.destroy(new Error(`no TLS connection to ${source.host}:${source.port} within ${CONNECT_TIMEOUT_MS / 1000} s`)));
    return new Promise((resolve, reject) => {
      socket.once('secureConnect', () => {
        socket.setTimeout(0);
        socket.setNoDelay(true);
        socket.setKeepAlive(true, 5_000);
        socket.write(encodeFrame({ type: FrameType.PageHello, hello: { protocol: WIRE_PROTOCOL, version: WIRE_VERSION, handoffId: this.o.handoffId, channel } }));
        resolve(socket);
      });
      socket.once('error', reject);
    });
  }

  /** Checks each page of a frame against its stop-time hash and hands the good ones to the fault server. */
  private async take(p: PagesPayload, channel: PageChannel): Promise<void> {
    // Ended (done, or failed): nothing more goes in, nor into the journal.
    if (this.finished.signal.aborted) return;
    let raw: Buffer;
    try {
      raw = zstdBounded(p.packed, p.indices.length * BLOCK_SIZE);
    } catch (err) {
      throw new HandoffError('PROTOCOL', `post-copy pages do not decompress: ${(err as Error).message}`);
    }
    if (raw.length !== p.indices.length * BLOCK_SIZE) throw new HandoffError('PROTOCOL', `a pages frame of ${p.indices.length} pages holds ${raw.length} bytes`);
    this.bytesReceived += p.packed.length + 12 * p.indices.length;
    const accepted: Array<{ page: number; at: number; bytes: Buffer }> = [];
    for (const [k, page] of p.indices.entries()) {
      const at = planPosition(this.o.plan, page);
      if (at < 0) throw new HandoffError('PROTOCOL', `the source sent page ${page}, which the post-copy plan does not name`);
      // Arrived, or taken by a frame on the other channel that is still putting it in.
      if (this.arrived[at] || accepted.some((a) => a.at === at)) continue;
      const bytes = raw.subarray(k * BLOCK_SIZE, (k + 1) * BLOCK_SIZE);
      if (this.hash64(bytes) !== p.stopHashes[k] || !this.asStopped(page, bytes)) {
        // Never put in where the guest could read it: asked for again, a few times.
        this.refused++;
        const times = (this.refusals.get(page) ?? 0) + 1;
        this.refusals.set(page, times);
        if (times >= MAX_REFUSALS) {
          this.failed?.(new HandoffError('STATE_MISMATCH', `post-copy page ${page} of ${this.o.handoffId} failed its stop-time hash ${times} times: the source's stopped copy is not what it stopped with`));
          return;
        }
        this.o.log?.(`post-copy page ${page} of ${this.o.handoffId} came on the ${channel} channel unlike its stop-time hash; refused, asked for again`);
        this.asked.set(page, this.asked.get(page) ?? Date.now());
        this.faultSocket?.write(encodeFrame({ type: FrameType.PageRequest, request: { runs: [[page, 1]] } }));
        continue;
      }
      accepted.push({ page, at, bytes });
      // Claimed at once: the awaits below (the journal, the VM host's fill) let the other
      // channel's frames in, and a page taken twice would count twice towards the last one.
      this.arrived[at] = CLAIMED;
    }
    if (accepted.length === 0 || this.finished.signal.aborted) return;
    // Journaled before they count as arrived and go in: a restarted worker finds each page in
    // place in the journal too. A journal that cannot be written fails the fetch (the pages stay
    // holes, and the source keeps its copy) rather than leave pages neither in nor asked for.
    const held = this.o.held;
    // The memory's pages are journaled; a disk block's own SHA-256 is in the switch's record,
    // and what the VM host still lacks is what a restarted worker fetches.
    const pages = accepted.filter((a) => a.page < this.o.memoryPages);
    const blocks = accepted.filter((a) => a.page >= this.o.memoryPages);
    for (const { page, bytes } of pages) held?.table.setPage(page, bytes);
    if (held?.journal !== undefined && pages.length > 0) {
      const records = Buffer.allocUnsafe(pages.length * ARRIVED_RECORD_BYTES);
      for (const [k, { page }] of pages.entries()) {
        records.writeUInt32LE(page, k * ARRIVED_RECORD_BYTES);
        held.table.sha(page).copy(records, k * ARRIVED_RECORD_BYTES + 4);
      }
      try {
        for (let off = 0; off < records.length; ) off += writeSync(held.journal, records, off);
      } catch (err) {
        this.failed?.(new HandoffError('TARGET_CANNOT_RUN', `the post-copy journal of ${this.o.handoffId} cannot be written: ${(err as Error).message}`));
        return;
      }
    }
    if (blocks.length > 0) {
      // Into the VM host's disk, where the guest's reads of them wait; a block the guest has
      // written whole since is left as it wrote it.
      try {
        await this.o.disk!.host.fill(blocks.map(({ page, bytes }) => ({ index: page - this.o.memoryPages, data: bytes })));
      } catch (err) {
        this.failed?.(new HandoffError('TARGET_CANNOT_RUN', `post-copy disk blocks of ${this.o.handoffId} could not be put in: ${(err as Error).message}`));
        return;
      }
    }
    for (const { at } of accepted) this.arrived[at] = ARRIVED;
    for (const { page, bytes } of accepted) {
      if (page < this.o.memoryPages) await this.server.put(page, bytes);
      const askedAt = this.asked.get(page);
      if (askedAt !== undefined) {
        this.latencies.push(Date.now() - askedAt);
        this.asked.delete(page);
      }
      if (--this.left === 0) this.allIn();
    }
  }
}

/** How long the VM host holds a request for demanded disk blocks open when there are none. */
const DEMAND_WAIT_MS = 1_000;

/** The VM host's side of a disk post-copy (its FUSE layer blocks the guest's reads of missing blocks). */
export interface DiskFill {
  markMissing(blocks: number[]): Promise<void>;
  missingBlocks(): Promise<number[]>;
  fill(blocks: Array<{ index: number; data: Buffer }>): Promise<void>;
  /** The missing blocks the guest waited on since the last call; [] after `waitMs` without one. */
  awaitDemand(waitMs: number): Promise<number[]>;
}

export interface PostCopyFetchOptions {
  handoffId: string;
  /** The source's data plane, and its name (its certificate must say it). */
  source: DataEndpoint;
  /** This cloudlet's certificate, key and site CA. */
  tls: CloudletTls;
  qemuPid: number;
  ramFile: string;
  memoryPages: number;
  plan: PostCopyPlan;
  /** A restarted worker taking a post-copy up: the holes are there already, and are what is left. */
  recovering?: boolean;
  /**
   * Where the plan's disk chunks (memoryPages + b) go, and each block's SHA-256 as stopped (from
   * the end frame; null: all zeros), which it must match on arrival as well as its xxHash64.
   */
  disk?: { host: DiskFill; sha256: ReadonlyMap<number, Buffer | null> };
  /**
   * The SHA-256 of every page as held at the switch (the stale ones' entries are replaced as
   * they arrive), whose digest is reported once the last page is in, and checked against the
   * stopped state's memory digest where it is known here.
   */
  held?: {
    table: PageHashTable;
    expectedDigest?: string;
    /** An open file each checked page's (u32 index, SHA-256) is appended to before it goes in: a restarted worker replays it. */
    journal?: number;
  };
  log?: (line: string) => void;
}
