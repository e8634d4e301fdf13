import { open, type FileHandle } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { Compressor } from 'zstd-napi';
import { BLOCK_SIZE } from '../blocks.js';
import { HandoffError } from '../errors.js';
import { MAX_PAGES_PER_FRAME, type PagesPayload } from '../wire/frames.js';
import type { PageSource } from '../wire/data-plane-server.js';
import { lowerBound, planPosition, runPages, type PostCopyPlan } from './plan.js';

/** The source's plan: the stale pages, and each one's xxHash64 as the stop-time scan read it (hashed after the switch, while the first faults may wait). */
export interface SourcePlan extends PostCopyPlan {
  stopHashes: Promise<BigUint64Array>;
}

/** The same, with the whole memory's digest as stopped: what the target must hold once the last page is in. */
export interface StoppedPlan extends SourcePlan {
  memoryDigest: Promise<string>;
  /** The operator's bandwidth cap at the switch, Mbit/s; null for none. */
  capMbps: number | null;
}

/** Where a stopped copy's chunks are read: its RAM file (memoryPages pages), then its disk's blocks. */
export interface StoppedChunks {
  ramFile: string;
  memoryPages: number;
  /** The stopped VM's disk, for a plan that names disk blocks. */
  disk?: { readBlock(index: number, into: Buffer): Promise<Buffer> };
}

/** Sends one pages frame, resolving once the socket took it (its backpressure paces the push). */
export type SendPages = (pages: PagesPayload) => Promise<void>;

/** Stale pages sent behind a fault's own, ahead of the push. */
export const FAULT_PREPAGE = 15;

/** Pre-paged frames waiting for the cap at most: past that, a fault's neighbours are left to the push. */
const MAX_PREPAGE_FRAMES_QUEUED = 4;

/** Level 3: the push is link-bound, and a fault's page is a single small frame either way. */
const PAGE_ZSTD_LEVEL = 3;

/**
 * The source's side of a post-copy: serves the pages of the stopped VM's RAM file that the target
 * lacks, over two channels of the data plane. The fault channel answers each request at once; the
 * push channel sends everything the target said it still lacks, in its order, starting after the
 * last page a fault asked for (pre-paging: a guest that faulted page i is likely to want i + 1
 * next, Hines & Gopalan), skipping what a fault already sent. Only the plan's pages are served:
 * the stopped copy's other pages are the target's already.
 */
export class StoppedPageService implements PageSource {
  private readonly compressor = new Compressor();
  /** The push channel under way: its order, what was sent on either channel since it began, and where it goes next. */
  private push?: { order: Uint32Array; sent: Uint8Array; left: number; cursor: number };
  readonly served = { faultPages: 0, pushedPages: 0, pushes: 0 };
  /** Pre-paged frames queued behind faults, and the last of them. */
  private prepaging = 0;
  private prepaged: Promise<void> = Promise.resolve();
  /** Bytes sent on both channels since the first: the operator's cap holds for their sum. */
  private readonly sent = { since: 0, bytes: 0 };

  private constructor(
    private readonly ram: FileHandle,
    private readonly stopped: StoppedChunks,
    private readonly plan: SourcePlan & { capMbps?: number | null },
    /** The cloudlet the handoff went to: only it may open a page channel. */
    readonly target: string,
  ) {
    this.compressor.setParameters({ compressionLevel: PAGE_ZSTD_LEVEL });
  }

  /**
   * Serves `plan`'s chunks to `target` from the stopped VM's RAM file and disk, which nothing
   * writes while this runs: chunk c < memoryPages is page c, c ≥ memoryPages disk block
   * c − memoryPages (see chunkOfDiskBlock).
   */
  static async open(stopped: StoppedChunks, plan: SourcePlan & { capMbps?: number | null }, target: string): Promise<StoppedPageService> {
    return new StoppedPageService(await open(stopped.ramFile, 'r'), stopped, plan, target);
  }

  /**
   * Answers a fault channel's request: the pages asked for, at once. Behind them the next
   * FAULT_PREPAGE stale pages the push has not sent go on the same channel — a guest that faulted
   * page i is likely to want i + 1 next (Hines & Gopalan's pre-paging) — in a frame of their own,
   * paced by the operator's cap like the push and not waited for here, so the next fault's
   * answer does not queue behind them; the push goes on after them.
   */
  async fault(runs: ReadonlyArray<readonly [number, number]>, send: SendPages): Promise<void> {
    const pages = this.planned(runs);
    for (let k = 0; k < pages.length; k += MAX_PAGES_PER_FRAME) await this.answer(pages.subarray(k, k + MAX_PAGES_PER_FRAME), send);
    const push = this.push;
    if (!push || pages.length === 0) return;
    for (const i of pages) this.markPushed(push, i);
    let next = lowerBound(push.order, pages[pages.length - 1]! + 1);
    const around: number[] = [];
    if (this.prepaging < MAX_PREPAGE_FRAMES_QUEUED) {
      for (; next < push.order.length && around.length < FAULT_PREPAGE; next++) if (!push.sent[next]) around.push(push.order[next]!);
    }
    for (const i of around) this.markPushed(push, i);
    push.cursor = next < push.order.length ? next : 0;
    if (around.length === 0) return;
    this.prepaging++;
    const sent = this.prepaged.then(async () => {
      const packed = await this.pack(Uint32Array.from(around));
      await this.paced(packed);
      await send(packed);
      this.served.faultPages += around.length;
    });
    this.prepaged = sent.catch(() => undefined).finally(() => this.prepaging--);
  }

  /** Sends pages on the fault channel at once (they count against the operator's cap all the same). */
  private async answer(pages: Uint32Array, send: SendPages): Promise<void> {
    const packed = await this.pack(pages);
    this.count(packed);
    await send(packed);
    this.served.faultPages += pages.length;
  }

  private markPushed(push: NonNullable<StoppedPageService['push']>, page: number): void {
    const at = planPosition({ pages: push.order }, page);
    if (at >= 0 && !push.sent[at]) ((push.sent[at] = 1), push.left--);
  }

  /**
   * Runs a push channel: every page of `runs` (what the target still lacks, as it told this
   * connection) not sent since, in frames of MAX_PAGES_PER_FRAME. Returns when all are sent; a
   * newer push channel (the target reconnected) takes over, and this one stops.
   */
  async pushAll(runs: ReadonlyArray<readonly [number, number]>, send: SendPages, signal?: AbortSignal): Promise<void> {
    const order = this.planned(runs);
    const mine = { order, sent: new Uint8Array(order.length), left: order.length, cursor: 0 };
    this.push = mine;
    this.served.pushes++;
    const batch = new Uint32Array(MAX_PAGES_PER_FRAME);
    while (mine.left > 0 && this.push === mine) {
      signal?.throwIfAborted();
      let n = 0;
      // A frame stops where the order wraps: its pages stay ascending, and those right after a
      // fault go first.
      for (let scanned = 0; n < MAX_PAGES_PER_FRAME && scanned < order.length && mine.left > 0; scanned++) {
        const at = mine.cursor;
        mine.cursor = at + 1 < order.length ? at + 1 : 0;
        if (!mine.sent[at]) {
          mine.sent[at] = 1;
          mine.left--;
          batch[n++] = order[at]!;
        }
        if (mine.cursor === 0 && n > 0) break;
      }
      if (n === 0) break;
      const some = batch.slice(0, n);
      const packed = await this.pack(some);
      await this.paced(packed, signal);
      await send(packed);
      this.served.pushedPages += n;
    }
  }

  private count(p: PagesPayload): void {
    if (this.sent.bytes === 0) this.sent.since = Date.now();
    this.sent.bytes += p.packed.length + 12 * p.indices.length;
  }

  /** Counts a push frame, after waiting as long as the operator's cap asks of everything sent so far. */
  private async paced(p: PagesPayload, signal?: AbortSignal): Promise<void> {
    this.count(p);
    const cap = this.plan.capMbps ?? null;
    if (cap === null || cap <= 0) return;
    const wait = this.sent.since + ((this.sent.bytes * 8) / (cap * 1e6)) * 1000 - Date.now();
    if (wait > 0) await sleep(wait, undefined, signal ? { signal } : {});
  }

  /** Resolves once the pre-paged frames queued so far were sent. */
  async prepagedSent(): Promise<void> {
    await this.prepaged;
  }

  async close(): Promise<void> {
    if (this.push) this.push.left = 0;
    await this.ram.close().catch(() => undefined);
  }

  /** The pages of `runs`, each of which must be in the plan. */
  private planned(runs: ReadonlyArray<readonly [number, number]>): Uint32Array {
    let pages: Uint32Array;
    try {
      pages = runPages(runs, this.plan.pages.length);
    } catch (err) {
      throw new HandoffError('PROTOCOL', `post-copy page request: ${(err as Error).message}`);
    }
    for (const i of pages) if (planPosition(this.plan, i) < 0) throw new HandoffError('PROTOCOL', `post-copy page request names page ${i}, which the target holds already`);
    return pages;
  }

  /** Reads `pages` (ascending chunks) from the stopped copy, contiguous stretches of RAM at once, and compresses them as one. */
  private async pack(pages: Uint32Array): Promise<PagesPayload> {
    const raw = Buffer.allocUnsafe(pages.length * BLOCK_SIZE);
    const { memoryPages, disk } = this.stopped;
    for (let k = 0; k < pages.length; ) {
      if (pages[k]! >= memoryPages) {
        if (!disk) throw new HandoffError('PROTOCOL', `post-copy chunk ${pages[k]} is a disk block, and this stopped copy serves memory only`);
        await disk.readBlock(pages[k]! - memoryPages, raw.subarray(k * BLOCK_SIZE, (k + 1) * BLOCK_SIZE));
        k++;
        continue;
      }
      let n = 1;
      while (k + n < pages.length && pages[k + n] === pages[k]! + n && pages[k + n]! < memoryPages) n++;
      const { bytesRead } = await this.ram.read(raw, k * BLOCK_SIZE, n * BLOCK_SIZE, pages[k]! * BLOCK_SIZE);
      if (bytesRead !== n * BLOCK_SIZE) throw new HandoffError('STATE_MISMATCH', `the stopped copy's RAM file ends before page ${pages[k]! + n}`);
      k += n;
    }
    const hashes = await this.plan.stopHashes;
    return { indices: pages, stopHashes: BigUint64Array.from(pages, (i) => hashes[planPosition(this.plan, i)]!), packed: this.compressor.compress(raw) };
  }
}
