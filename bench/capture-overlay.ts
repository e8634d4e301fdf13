import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Cloudlet } from '../engine/cloudlet/cloudlet.js';
import type { VmInstance } from '../engine/cloudlet/vm-instance.js';
import { captureMemory } from '../engine/memory/memory-capture.js';
import type { Workload } from '../engine/names.js';
import { devCloudletTls } from '../infra/dev-pki.js';
import type { BuiltBaseImage } from '../infra/base-image/build-base-image.js';

export interface CapturedOverlay {
  cloudlet: Cloudlet;
  vm: VmInstance;
  memoryPages: number[];
  diskBlocks: number[];
  captureMs: number;
}

/**
 * Real VM state for benchmarks: boots a guest from the base on a private cloudlet, runs a
 * workload until it has loaded and churned, pauses it, and captures its overlay.
 */
export async function captureRealOverlay(base: BuiltBaseImage, dir: string, workload: Workload, runSeconds: number, log: (l: string) => void): Promise<CapturedOverlay> {
  const cloudlet = new Cloudlet({ name: 'bench', runDir: join(dir, 'run'), imageCacheDir: join(dir, 'images'), dataHost: '127.0.0.1', prefix: 'ehoff', tls: await devCloudletTls('bench') });
  await cloudlet.start();
  await cloudlet.images.install(base.dir);
  const t0 = Date.now();
  await cloudlet.launchVm('bench-vm', base.id, workload, { readyTimeoutMs: 600_000 });
  const vm = cloudlet.vm('bench-vm');
  await vm.serial.waitFor((t) => t.includes('EHOFF-KVSTORE-LOADED') || !workload.name.startsWith('kv'), 600_000);
  log(`guest ${workload.name} ${workload.args.join(' ')} loaded in ${((Date.now() - t0) / 1000).toFixed(1)} s; running ${runSeconds} s`);
  await sleep(runSeconds * 1000);
  await vm.host.pause();
  const started = Date.now();
  const memory = await captureMemory(vm.files.ramFile, vm.base.path('memory'), vm.base.manifest.memory.sizeBytes);
  return { cloudlet, vm, memoryPages: memory.changedPages, diskBlocks: await vm.disk.dirtyBlocks(), captureMs: Date.now() - started };
}
