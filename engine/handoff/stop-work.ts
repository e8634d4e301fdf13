import { readFile } from 'node:fs/promises';
import type { VmInstance } from '../cloudlet/vm-instance.js';
import type { SourceStopMarks } from '../contract.js';
import type { MemoryTracker } from '../memory/memory-tracker.js';
import type { CodecPool } from '../pipeline/codec-pool.js';
import { Space } from '../pipeline/chunk-records.js';
import type { ChunkList } from '../pipeline/overlay-encoder.js';
import { stopTrace } from '../stop-trace.js';
import { diskDigest } from './state-digest.js';

/**
 * The stop-time scan runs in this many shares per pool thread, consumed in file order: what the
 * first shares find is encoded and on the link while the rest is scanned.
 */
const STOP_SCAN_SHARES_PER_THREAD = 4;

/** What the paused VM's stop has under way; each part settles on its own. */
export interface StopWork {
  /** The device state, saved alongside the scan (it does not depend on RAM: x-ignore-shared). */
  deviceState: Promise<Buffer>;
  /** The disk's digest from base + overlay: the disk is still once QEMU has stopped. */
  diskDigest: Promise<string>;
  /** The guest's last heartbeat counter at the pause. */
  heartbeatAtStop: Promise<number | null>;
  /** Host time the last heartbeat before the pause arrived, and the longest silence while live. */
  lastHeartbeatAtMs: number | null;
  liveMaxGapMs: number;
  /** The final epoch's chunk lists: memory pages share by share as the scan finds them, then the disk's blocks. */
  finalLists: () => AsyncGenerator<ChunkList>;
}

/**
 * Pauses the VM and starts everything the stop needs at once, none awaited before the scan: the
 * device state, the disk digest, the last heartbeat, and the scan of the RAM file for pages
 * changed since they were last read. `diskBlocks`: the blocks still to send (those taken for an
 * epoch that was not run, and whatever was written since).
 */
export async function pauseAndStartStop(o: { vm: VmInstance; tracker: MemoryTracker; pool: CodecPool; diskBlocks: () => Promise<number[]>; marks: SourceStopMarks }): Promise<StopWork> {
  const { vm, marks } = o;
  await vm.host.pause();
  marks.pausedAtMs = Date.now();
  stopTrace('src paused');
  const deviceState = vm.host.saveDeviceState(vm.files.deviceState).then(async () => {
    const d = await readFile(vm.files.deviceState);
    marks.deviceStateSavedAtMs = Date.now();
    stopTrace('src device state saved');
    return d;
  });
  const disk = diskDigest(vm.base, vm.disk);
  const heartbeatAtStop = vm.serial.lastHeartbeat().then((hb) => hb ?? null);
  const finalDisk = o.diskBlocks();
  // Awaited later, by whoever needs them; a failure must not go unhandled before then.
  for (const p of [deviceState, disk, heartbeatAtStop, finalDisk]) p.catch(() => undefined);
  const scan = o.tracker.changedPagesByShare(vm.files.ramFile, o.pool, STOP_SCAN_SHARES_PER_THREAD);
  return {
    deviceState,
    diskDigest: disk,
    heartbeatAtStop,
    liveMaxGapMs: vm.heartbeats.maxGapMs,
    lastHeartbeatAtMs: vm.heartbeats.last?.atMs ?? null,
    finalLists: async function* () {
      for await (const share of scan) {
        stopTrace(`src share ${share.length}`);
        yield { space: Space.Memory, indices: Array.from(share) };
      }
      marks.scannedAtMs = Date.now();
      yield { space: Space.Disk, indices: await finalDisk };
    },
  };
}
