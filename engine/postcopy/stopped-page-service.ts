import { open, type FileHandle } from 'node:fs/promises';
import { Compressor } from 'zstd-napi';
import { BLOCK_SIZE } from '../blocks.js';
import { HandoffError } from '../errors.js';
import { MAX_PAGES_PER_FRAME, type PagesPayload } from '../wire/frames.js';
import type { PageSource } from '../wire/data-plane-server.js';
import { lowerBound, planPosition, runPages, type PostCopyPlan } from './plan.js';

/** Sends one pages frame, resolving once the socket took it (its backpressure paces the push). */
export type SendPages = (pages: PagesPayload) => Promise<void>;

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

  private constructor(
    private readonly ram: FileHandle,
    private readonly plan: Pick<PostCopyPlan, 'pages'>,
    /** The cloudlet the handoff went to: only it may open a page channel. */
    readonly target: string,
  ) {
    this.compressor.setParameters({ compressionLevel: PAGE_ZSTD_LEVEL });
  }

  /** Serves `plan`'s pages to `target` from `ramFile`, the stopped VM's, which nothing writes while this runs. */
  static async open(ramFile: string, plan: Pick<PostCopyPlan, 'pages'>, target: string): Promise<StoppedPageService> {
    return new StoppedPageService(await open(ramFile, 'r'), plan, target);
  }

  /** Answers a fault channel's request: the pages asked for, at once. */
  async fault(runs: ReadonlyArray<readonly [number, number]>, send: SendPages): Promise<void> {
    const pages = this.planned(runs);
    for (let k = 0; k < pages.length; k += MAX_PAGES_PER_FRAME) {
      const some = pages.subarray(k, k + MAX_PAGES_PER_FRAME);
      await send(await this.pack(some));
      this.served.faultPages += some.length;
    }
    const push = this.push;
    if (!push || pages.length === 0) return;
    for (const i of pages) {
      const at = planPosition({ pages: push.order }, i);
      if (at >= 0 && !push.sent[at]) ((push.sent[at] = 1), push.left--);
    }
    // Pre-paging: the push goes on right after the last page faulted.
    const next = lowerBound(push.order, pages[pages.length - 1]! + 1);
    push.cursor = next < push.order.length ? next : 0;
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
      await send(await this.pack(some));
      this.served.pushedPages += n;
    }
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

  /** Reads `pages` (ascending) from the stopped copy, contiguous stretches at once, and compresses them as one. */
  private async pack(pages: Uint32Array): Promise<PagesPayload> {
    const raw = Buffer.allocUnsafe(pages.length * BLOCK_SIZE);
    for (let k = 0; k < pages.length; ) {
      let n = 1;
      while (k + n < pages.length && pages[k + n] === pages[k]! + n) n++;
      const { bytesRead } = await this.ram.read(raw, k * BLOCK_SIZE, n * BLOCK_SIZE, pages[k]! * BLOCK_SIZE);
      if (bytesRead !== n * BLOCK_SIZE) throw new HandoffError('STATE_MISMATCH', `the stopped copy's RAM file ends before page ${pages[k]! + n}`);
      k += n;
    }
    return { indices: pages, packed: this.compressor.compress(raw) };
  }
}
