import { open, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { HandoffError } from '../errors.js';
import type { PostCopyReport } from '../contract.js';
import { PageHashTable } from '../memory/page-hash-table.js';
import type { CloudletTls } from '../wire/cloudlet-tls.js';
import type { PostCopyEnd } from '../wire/overlay-sender.js';
import { ARRIVED_RECORD_BYTES, PostCopyFetch, type DiskFill } from './page-fetcher.js';
import { chunksOf, runPages } from './plan.js';
import { staleDiskOf } from './stopped-disk-blocks.js';
import { TARGET_ARRIVED_FILE, TARGET_HELD_HASHES_FILE, targetPostCopyRecord, type TargetPostCopyRecord } from './postcopy-records.js';

/** Where a post-copy's target runs: the VM's folder and RAM file, its QEMU, and who serves its pages. */
export interface TargetPostCopyPlace {
  handoffId: string;
  vmDir: string;
  ramFile: string;
  qemuPid: number;
  memoryPages: number;
  /** The disk's size in blocks, and the VM host that serves it (where stale blocks are filled). */
  diskBlocks: number;
  disk: DiskFill;
  tls: CloudletTls;
  log?: (line: string) => void;
}

/**
 * Starts a post-copy's fetch at the target once its held state was verified: declared in the
 * VM's folder first, then the stale pages become holes and the fetch begins. Every page checked in
 * is journaled before it goes in, and the hashes of what was held at the switch are saved beside
 * it (off the stopped path), so that a restarted worker can still give the whole memory's digest.
 */
export async function startTargetPostCopy(
  p: TargetPostCopyPlace & { source: string; end: PostCopyEnd; held: PageHashTable; finalized: unknown; heartbeatAtStop: number | null },
): Promise<{ fetch: PostCopyFetch; heldSaved: Promise<void> }> {
  let pages: Uint32Array;
  try {
    pages = runPages(p.end.staleRuns, p.memoryPages);
  } catch (err) {
    throw new HandoffError('PROTOCOL', `the post-copy's stale pages: ${(err as Error).message}`);
  }
  if (pages.some((i, k) => i >= p.memoryPages || (k > 0 && i <= pages[k - 1]!))) {
    throw new HandoffError('PROTOCOL', `the post-copy's stale pages are not ascending pages of the ${p.memoryPages}-page memory`);
  }
  const staleDisk = staleDiskOf(p.end.staleDisk, p.diskBlocks);
  await writeRecord(p.vmDir, { handoffId: p.handoffId, source: p.source, ...p.end, finalized: p.finalized, heartbeatAtStop: p.heartbeatAtStop });
  const atSwitch = new PageHashTable(p.memoryPages);
  atSwitch.copyFrom(p.held);
  const journal = await open(join(p.vmDir, TARGET_ARRIVED_FILE), 'w');
  const fetch = await PostCopyFetch.start({
    handoffId: p.handoffId, source: { host: p.end.host, port: p.end.port, cloudlet: p.source }, tls: p.tls, qemuPid: p.qemuPid, ramFile: p.ramFile,
    memoryPages: p.memoryPages, plan: { pages: chunksOf(pages, staleDisk.blocks, p.memoryPages) }, held: { table: p.held, journal: journal.fd },
    ...(staleDisk.blocks.length > 0 ? { disk: { host: p.disk, sha256: staleDisk.sha256 } } : {}), ...(p.log ? { log: p.log } : {}),
  }).catch(async (err: unknown) => {
    await journal.close();
    throw err;
  });
  void fetch.done.finally(() => journal.close()).catch(() => undefined);
  // Saved while the device state loads; awaited before the VM runs, so that a worker that dies
  // after its `cont` leaves its successor what the digest needs.
  const heldSaved = saveHeldHashes(join(p.vmDir, TARGET_HELD_HASHES_FILE), atSwitch);
  heldSaved.catch(() => undefined);
  return { fetch, heldSaved };
}

/**
 * Takes up the post-copy a previous worker of this cloudlet was fetching for the VM in `vmDir`,
 * if any: its record, and unless it had finished, a fetch of what is still missing (the RAM
 * file's holes) from the source. The digest of the whole memory is kept from the hashes saved at
 * the switch and the journal of pages checked in since; without them the fetch still completes,
 * and reports no digest (the source then keeps its copy: nothing confirmed it may go).
 */
export async function recoverTargetPostCopy(p: TargetPostCopyPlace): Promise<{ record: TargetPostCopyRecord; fetch?: PostCopyFetch } | undefined> {
  const record = await targetPostCopyRecord(p.vmDir).read();
  if (!record || record.handoffId !== p.handoffId) return undefined;
  if (record.fetched) return { record };
  const table = await loadHeld(p.vmDir, p.memoryPages).catch((err: Error) => (p.log?.(`handoff ${p.handoffId}: ${err.message}; the whole memory's digest will not be given`), undefined));
  const journal = await open(join(p.vmDir, TARGET_ARRIVED_FILE), 'a');
  // A record the crash cut short is dropped (its page is still a hole, and comes again): the
  // records appended from here stay aligned.
  const { size } = await journal.stat();
  await journal.truncate(size - (size % ARRIVED_RECORD_BYTES));
  const staleDisk = staleDiskOf(record.staleDisk, p.diskBlocks);
  const fetch = await PostCopyFetch.start({
    handoffId: p.handoffId, source: { host: record.host, port: record.port, cloudlet: record.source }, tls: p.tls, qemuPid: p.qemuPid, ramFile: p.ramFile,
    memoryPages: p.memoryPages, plan: { pages: chunksOf(runPages(record.staleRuns, p.memoryPages), staleDisk.blocks, p.memoryPages) }, recovering: true,
    ...(staleDisk.blocks.length > 0 ? { disk: { host: p.disk, sha256: staleDisk.sha256 } } : {}),
    ...(table ? { held: { table, journal: journal.fd } } : {}), ...(p.log ? { log: p.log } : {}),
  }).catch(async (err: unknown) => {
    await journal.close();
    throw err;
  });
  void fetch.done.finally(() => journal.close()).catch(() => undefined);
  return { record, fetch };
}

/** Adds to the VM's post-copy record how the VM resumed, or what the fetch reported once done. */
export function recordTargetPostCopy(vmDir: string, update: { resumed: unknown } | { fetched: PostCopyReport }): Promise<void> {
  return writeRecord(vmDir, async () => {
    const record = await targetPostCopyRecord(vmDir).read();
    return record && { ...record, ...update };
  });
}

/** Writes of each VM folder's record, one after another: each update reads the one before. */
const recordWrites = new Map<string, Promise<void>>();

function writeRecord(vmDir: string, next: TargetPostCopyRecord | (() => Promise<TargetPostCopyRecord | undefined>)): Promise<void> {
  const write = (recordWrites.get(vmDir) ?? Promise.resolve()).then(async () => {
    const record = typeof next === 'function' ? await next() : next;
    if (record) await targetPostCopyRecord(vmDir).write(record);
  });
  const settled = write.catch(() => undefined);
  recordWrites.set(vmDir, settled);
  void settled.then(() => recordWrites.get(vmDir) === settled && recordWrites.delete(vmDir));
  return write;
}

/** A hash table's buffers, whole or not at all (written beside, then renamed). */
async function saveHeldHashes(path: string, table: PageHashTable): Promise<void> {
  await writeFile(`${path}.tmp`, Buffer.concat([table.records, table.zero]));
  await rename(`${path}.tmp`, path);
}

/** The hashes held at the switch, with every page journaled since put in. */
async function loadHeld(vmDir: string, memoryPages: number): Promise<PageHashTable> {
  const saved = await readFile(join(vmDir, TARGET_HELD_HASHES_FILE)).catch(() => undefined);
  const table = new PageHashTable(memoryPages);
  if (!saved || saved.length !== table.records.length + table.zero.length) throw new Error('the hashes held at the switch were not saved');
  table.records.set(saved.subarray(0, table.records.length));
  table.zero.set(saved.subarray(table.records.length));
  const journal = await readFile(join(vmDir, TARGET_ARRIVED_FILE)).catch(() => Buffer.alloc(0));
  // A record cut short by the crash is of a page still missing: it comes again.
  for (let off = 0; off + ARRIVED_RECORD_BYTES <= journal.length; off += ARRIVED_RECORD_BYTES) {
    const page = journal.readUInt32LE(off);
    if (page < memoryPages) table.set(page, journal.subarray(off + 4, off + ARRIVED_RECORD_BYTES));
  }
  return table;
}
