import { Cloudlet } from '../../engine/cloudlet/cloudlet.js';
import { devCloudletTls } from '../../infra/dev-pki.js';

// A stand-in worker process for the VM-host test: starts a cloudlet in a run folder, launches one
// VM with a heartbeat workload, says so, and waits to be killed (as a worker is, by kill -9).
const [runDir, imageCacheDir, baseDir, vmId] = process.argv.slice(2) as [string, string, string, string];
const cloudlet = new Cloudlet({ name: 'A', runDir, imageCacheDir, dataHost: '127.0.0.1', prefix: 'ehoff', tls: await devCloudletTls('A') });
await cloudlet.start();
const base = await cloudlet.images.install(baseDir);
await cloudlet.launchVm(vmId, base.manifest.id, { name: 'heartbeat', args: ['4', '100'] });
// Once the guest has written its disk, so the block map has something to keep.
let dirty = 0;
for (let i = 0; i < 100 && dirty === 0; i++) {
  dirty = (await cloudlet.describe(vmId)).dirtyDiskBlocks;
  await new Promise((r) => setTimeout(r, 100));
}
console.log(`LAUNCHED ${dirty}`);
setInterval(() => undefined, 60_000);
