import { copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Cloudlet } from '../../engine/cloudlet/cloudlet.js';
import type { HostRecord } from '../../engine/host/host-protocol.js';
import { DISK_FILE_NAME } from '../../engine/disk/fuse-disk.js';
import { testBaseImage } from './fixtures.js';

/**
 * A kvstore guest run on `cloudlet` for a few seconds, then stopped the way a handoff's source
 * stops it (paused, device state saved), its RAM, device state and disk copied out to `to` and
 * the VM destroyed: what a post-copy target resumes from. Returns the guest's last heartbeat
 * before the stop and the VM's record (its machine, kernel and initrd).
 */
export async function stoppedKvstoreGuest(cloudlet: Cloudlet, vmId: string, to: { ram: string; deviceState: string; disk: string }): Promise<{ beatBefore: number; record: HostRecord }> {
  await cloudlet.launchVm(vmId, (await testBaseImage()).id, { name: 'kvstore', args: ['32', '200'] });
  const vm = cloudlet.vm(vmId);
  await sleep(4_000);
  const beatBefore = (await vm.serial.lastHeartbeat()) ?? 0;
  await vm.host.pause();
  await vm.host.saveDeviceState(vm.files.deviceState);
  await copyFile(vm.files.ramFile, to.ram);
  await copyFile(vm.files.deviceState, to.deviceState);
  await copyFile(join(vm.files.mountPoint, DISK_FILE_NAME), to.disk);
  const record = vm.record;
  await cloudlet.destroyVm(vmId);
  return { beatBefore, record };
}
