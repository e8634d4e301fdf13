import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { BLOCK_SIZE } from '../blocks.js';
import type { MemoryTracking } from '../contract.js';

/**
 * Which pages of a running VM's RAM were written since it was last asked: the kernel's record,
 * in place of hashing every page of the RAM file each epoch. `collect` is exact in one direction
 * only — a page it lists may hold the same bytes as before; one it leaves out was not written
 * through QEMU's mapping since the last call.
 */
export interface DirtyLog {
  /** Page indices of the RAM file, ascending; the pages are write-protected again in the same walk. */
  collect(): Uint32Array;
}

/** The dirty log in C (native/dirty-log), built by `npm ci`. */
interface NativeDirtyLog {
  arm(pid: number, start: bigint, length: number): void;
  collect(pid: number, start: bigint, length: number): Uint32Array;
  /** The library QEMU is started with (LD_PRELOAD): it creates the userfaultfd inside QEMU. */
  preloadLibrary: string;
}

let loaded: { native: NativeDirtyLog | null; why: string } | undefined;

function load(): { native: NativeDirtyLog | null; why: string } {
  if (process.env.EHOFF_DIRTY_LOG === 'scan') return { native: null, why: 'EHOFF_DIRTY_LOG=scan' };
  try {
    const native = createRequire(import.meta.url)('ehoff-dirty-log') as NativeDirtyLog;
    // The loader splits LD_PRELOAD at spaces and colons: such a path would be dropped unseen.
    if (/[\s:]/.test(native.preloadLibrary)) return { native: null, why: `the preload library's path has a space or colon: ${native.preloadLibrary}` };
    return { native, why: '' };
  } catch (err) {
    return { native: null, why: `the native dirty log did not load: ${(err as Error).message.split('\n')[0]}; run npm ci` };
  }
}

function nativeDirtyLog(): { native: NativeDirtyLog | null; why: string } {
  loaded ??= load();
  return loaded;
}

/**
 * What to put before QEMU's command line so that its guest RAM can be dirty-logged: `env
 * LD_PRELOAD=…` right before QEMU, so that none of the launchers ahead of it (setpriv, ip netns
 * exec) loads the library. Empty where the dirty log is off or not built: QEMU runs as before.
 */
export function dirtyLogLaunchPrefix(): string[] {
  const { native } = nativeDirtyLog();
  return native ? ['/usr/bin/env', `LD_PRELOAD=${native.preloadLibrary}`] : [];
}

/** One mapping of the RAM file in QEMU's address space (/proc/<pid>/maps). */
export interface RamMapping {
  start: bigint;
  length: number;
  /** The file page the mapping starts at. */
  firstPage: number;
}

/** The mappings of `ramFile` in a /proc/<pid>/maps text. */
export function ramMappings(maps: string, ramFile: string): RamMapping[] {
  const found: RamMapping[] = [];
  for (const line of maps.split('\n')) {
    // start-end perms offset dev inode path (the path may hold spaces: it is the rest of the line)
    const m = /^([0-9a-f]+)-([0-9a-f]+) \S+ ([0-9a-f]+) \S+ \d+\s+(.*)$/.exec(line);
    if (!m || m[4] !== ramFile) continue;
    const start = BigInt(`0x${m[1]}`);
    found.push({ start, length: Number(BigInt(`0x${m[2]}`) - start), firstPage: Number(BigInt(`0x${m[3]}`) / BigInt(BLOCK_SIZE)) });
  }
  return found;
}

/** The newest log armed per QEMU process: arming again (a retried attempt) retires the older one. */
const newestLog = new Map<number, KernelDirtyLog>();

/**
 * userfaultfd async write-protection over QEMU's mappings of the RAM file, read with PAGEMAP_SCAN.
 * It sees every write through QEMU's page tables (the guest's, under TCG, and the kernel's on
 * QEMU's behalf, such as a disk read into guest memory), however the pages are reclaimed or
 * migrated meanwhile. It does not see bytes that change without a write fault: a hole punched in
 * the file (balloon, virtio-mem, free-page reporting), DMA into pages pinned before an epoch
 * (an O_DIRECT disk, VFIO), another process's mapping or write() of the file. The machine
 * (engine/vm/machine.ts) has none of these; were one added, the page it changed would differ
 * from the digest the source sends, and the target refuses the state.
 */
class KernelDirtyLog implements DirtyLog {
  constructor(
    private readonly native: NativeDirtyLog,
    private readonly qemuPid: number,
    private readonly mappings: RamMapping[],
  ) {}

  collect(): Uint32Array {
    // A retired log must not take writes from the newer one: what it took, the newer would miss.
    if (newestLog.get(this.qemuPid) !== this) throw new Error(`the dirty log of QEMU pid ${this.qemuPid} was armed again by a later handoff attempt`);
    return ascendingPages(this.mappings.map((m) => this.native.collect(this.qemuPid, m.start, m.length).map((i) => i + m.firstPage)));
  }
}

/**
 * The pages of one or more walks as one ascending list without repeats. Several mappings of the
 * file may overlap; and one walk over a fast writer is not ascending: under fluid (16,000 pages
 * an epoch) a walk's calls listed pages up to 262,084 and then 13 more from 153,607 on, below
 * what they had listed: a PAGEMAP_SCAN call can return a `walk_end` behind what it walked (by
 * Linux's do_pagemap_scan, it keeps the first pass's stop), and the next call, resuming there,
 * lists the pages written since again. A page listed twice costs nothing, and none is missed
 * (a page is protected again only once listed; the target's digest of that handoff matched), but
 * the changed-pages scan refuses such a list: the log's contract is restored here.
 */
export function ascendingPages(parts: readonly Uint32Array[]): Uint32Array {
  if (parts.length === 1 && strictlyAscending(parts[0]!)) return parts[0]!;
  const all = new Uint32Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    all.set(p, at);
    at += p.length;
  }
  all.sort();
  let kept = 0;
  for (let k = 0; k < all.length; k++) if (k === 0 || all[k] !== all[kept - 1]) all[kept++] = all[k]!;
  return all.subarray(0, kept);
}

function strictlyAscending(pages: Uint32Array): boolean {
  for (let k = 1; k < pages.length; k++) if (pages[k]! <= pages[k - 1]!) return false;
  return true;
}

/**
 * Starts the kernel's dirty log over QEMU's guest RAM: from now on every write through QEMU's
 * mappings of `ramFile` is recorded. What was written before is not: the caller scans the whole
 * file once after this. Where the log cannot be had (the library not built or not preloaded, a
 * kernel before 6.7, no permission), says why, and the caller hashes the RAM file every epoch.
 */
export async function armDirtyLog(qemuPid: number | null, ramFile: string): Promise<{ log: DirtyLog; tracking: MemoryTracking } | { log: null; tracking: MemoryTracking }> {
  const { native, why } = nativeDirtyLog();
  if (!native) return { log: null, tracking: { kind: 'hash-scan', why } };
  if (qemuPid === null) return { log: null, tracking: { kind: 'hash-scan', why: 'QEMU is not running' } };
  let maps: string;
  try {
    maps = await readFile(`/proc/${qemuPid}/maps`, 'utf8');
  } catch (err) {
    return { log: null, tracking: { kind: 'hash-scan', why: `cannot read QEMU's mappings: ${(err as Error).message}` } };
  }
  const mappings = ramMappings(maps, ramFile);
  if (mappings.length === 0) return { log: null, tracking: { kind: 'hash-scan', why: `QEMU pid ${qemuPid} does not map ${ramFile}` } };
  try {
    for (const m of mappings) native.arm(qemuPid, m.start, m.length);
  } catch (err) {
    return { log: null, tracking: { kind: 'hash-scan', why: (err as Error).message } };
  }
  const log = new KernelDirtyLog(native, qemuPid, mappings);
  newestLog.set(qemuPid, log);
  return { log, tracking: { kind: 'dirty-log' } };
}

/** Whether VMs started now get a dirty log, and if not why: a worker prints it at start. */
export function dirtyLogAvailability(): string {
  const { native, why } = nativeDirtyLog();
  return native ? 'on: QEMU starts with the userfaultfd library preloaded; each handoff says whether the log armed' : `off (${why}): every epoch hashes the whole RAM file`;
}
