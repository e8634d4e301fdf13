import { open } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { BLOCK_SIZE } from '../blocks.js';
import { MemoryTracker } from '../memory/memory-tracker.js';
import { compressBatch } from '../pipeline/codecs.js';
import { loadHash64 } from '../pipeline/checksum.js';
import { DEFAULT_MODE } from '../adaptation/mode.js';
import type { Cloudlet } from './cloudlet.js';
import { fitDirtyCurve } from '../placement/forecast-handoff.js';

/** What `ehoff plan` measures of a running VM, without moving it. */
export interface VmMeasurement {
  vmId: string;
  /** RAM pages that differ from the base, and written disk blocks: what a first epoch would send, raw. */
  overlayBytes: number;
  memoryPagesChanged: number;
  diskBlocksWritten: number;
  /** Distinct pages made different per second, at first (fitted over a third of the window and the whole). */
  dirtyBytesPerS: number;
  /** The writable working set the dirtied pages saturate at; null when none showed within the window. */
  workingSetBytes: number | null;
  windowMs: number;
  /** Wire bytes per raw byte of a sample of its changed pages in the stream's starting mode. */
  wireRatio: number;
  wireMode: string;
  memoryBytes: number;
}

/** Pages of the overlay compressed to estimate the ratio: 2 MiB, spread over the changed pages. */
const SAMPLE_PAGES = 512;

/**
 * Measures a VM as a handoff's first epochs would see it: the pages that differ from its base
 * (hashed on the codec pool, as the stream's scan is), then, after `windowMs`, the pages that
 * changed again or anew — the dirty rate. The VM runs on throughout.
 */
export async function measureVm(cloudlet: Cloudlet, vmId: string, windowMs: number): Promise<VmMeasurement> {
  const vm = cloudlet.vm(vmId);
  const pool = cloudlet.codecPool();
  const { tracker, changed } = await againstBase(cloudlet, vmId);
  const ram = await open(vm.files.ramFile, 'r');
  const sample: Buffer[] = [];
  const every = Math.max(1, Math.floor(changed.length / SAMPLE_PAGES));
  try {
    // What was read is what the target would hold: the next scan counts only what changes after.
    for (let k = 0; k < changed.length; k++) {
      const page = Buffer.alloc(BLOCK_SIZE);
      await ram.read(page, 0, BLOCK_SIZE, changed[k]! * BLOCK_SIZE);
      tracker.sent(changed[k]!, page);
      if (k % every === 0 && sample.length < SAMPLE_PAGES) sample.push(page);
    }
  } finally {
    await ram.close();
  }
  // Distinct pages dirtied since now, after a third of the window and after all of it: a guest
  // rewrites its working set, so the count saturates, and a straight line through the first
  // window would overstate what later epochs resend.
  const startedAt = Date.now();
  await sleep(windowMs / 3);
  const early = (await tracker.changedPagesOnPool(vm.files.ramFile, pool)).length;
  const earlyS = (Date.now() - startedAt) / 1000;
  await sleep(Math.max(0, startedAt + windowMs - Date.now()));
  const dirtied = await tracker.changedPagesOnPool(vm.files.ramFile, pool);
  const elapsedS = (Date.now() - startedAt) / 1000;
  // The scans take time of their own: scale the late count to exactly three early windows.
  const curve = fitDirtyCurve(earlyS, early * BLOCK_SIZE, dirtied.length * BLOCK_SIZE * Math.min(1, (3 * earlyS) / elapsedS));
  const raw = Buffer.concat(sample);
  const wire = raw.length ? (await compressBatch(DEFAULT_MODE.codec, DEFAULT_MODE.level, raw)).length : 0;
  const diskBlocksWritten = (await vm.host.status()).dirtyBlocks;
  return {
    vmId,
    overlayBytes: (changed.length + diskBlocksWritten) * BLOCK_SIZE,
    memoryPagesChanged: changed.length,
    diskBlocksWritten,
    dirtyBytesPerS: curve.rate,
    workingSetBytes: curve.workingSetBytes,
    windowMs: Math.round(elapsedS * 1000),
    wireRatio: raw.length ? wire / raw.length : 1,
    wireMode: `${DEFAULT_MODE.delta}/${DEFAULT_MODE.codec}-${DEFAULT_MODE.level}`,
    memoryBytes: vm.base.manifest.memory.sizeBytes,
  };
}

/**
 * What a handoff of the VM would send now, before compression: its RAM pages that differ from
 * the base (hashed on the codec pool, as a handoff's first epoch does) and its written disk blocks.
 */
export async function expectedOverlayBytes(cloudlet: Cloudlet, vmId: string): Promise<number> {
  const { changed } = await againstBase(cloudlet, vmId);
  return (changed.length + (await cloudlet.vm(vmId).host.status()).dirtyBlocks) * BLOCK_SIZE;
}

async function againstBase(cloudlet: Cloudlet, vmId: string): Promise<{ tracker: MemoryTracker; changed: number[] }> {
  const vm = cloudlet.vm(vmId);
  const tracker = MemoryTracker.fromBase(await cloudlet.basePageHashes(vm.base), await loadHash64());
  return { tracker, changed: await tracker.changedPagesOnPool(vm.files.ramFile, cloudlet.codecPool()) };
}
