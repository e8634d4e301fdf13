import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { access, readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { Cloudlet } from '../engine/cloudlet/cloudlet.js';
import { HOST_PIDS_FILE, hostPidsSchema } from '../engine/host/host-protocol.js';
import { SerialLog } from '../engine/vm/serial-log.js';
import { devCloudletTls } from '../infra/dev-pki.js';
import { testBaseImage, tempRoot } from './support/fixtures.js';

// A VM belongs to its host process, not to the worker: the worker dies (kill -9) and the guest
// goes on; the next worker re-adopts it. A host that dies takes its VM with it, and the VM is
// then reported lost, by name, with everything it left swept.

let root: Awaited<ReturnType<typeof tempRoot>>;
let base: Awaited<ReturnType<typeof testBaseImage>>;
const cloudlets: Cloudlet[] = [];

before(async () => {
  base = await testBaseImage();
  root = await tempRoot('host');
});

after(async () => {
  for (const c of cloudlets) await c.destroyAll().catch(() => undefined);
  for (const c of cloudlets) await c.stop().catch(() => undefined);
  await root?.remove();
});

const runDir = () => join(root.dir, 'A');
const openCloudlet = async () => {
  const c = new Cloudlet({ name: 'A', runDir: runDir(), imageCacheDir: join(root.dir, 'images'), dataHost: '127.0.0.1', prefix: 'ehoff', tls: await devCloudletTls('A') });
  cloudlets.push(c);
  await c.start();
  return c;
};

async function heartbeatAdvances(serialLog: string): Promise<boolean> {
  const log = new SerialLog(serialLog);
  const before = (await log.lastHeartbeat()) ?? 0;
  return log.waitForHeartbeatAbove(before, 5_000).then(() => true, () => false);
}

/** Running, not a zombie (an orphan's exit is reaped by whoever PID 1 is here, sometimes late). */
const alive = (pid: number) => readFile(`/proc/${pid}/stat`, 'utf8').then((s) => !/\) Z /.test(s), () => false);

test('kill -9 of the worker leaves the VM running; the next worker re-adopts it and can end it', async () => {
  const worker = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'support', 'launch-then-wait.ts'), runDir(), join(root.dir, 'images'), base.dir, 'kept-vm'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const dirtyBefore = await new Promise<number | undefined>((resolve) => {
    createInterface({ input: worker.stdout! }).on('line', (l) => l.startsWith('LAUNCHED') && resolve(Number(l.split(' ')[1])));
    worker.once('exit', () => resolve(undefined));
  });
  assert.ok(dirtyBefore !== undefined && dirtyBefore > 0, `the stand-in worker launched its VM, which wrote its disk (${dirtyBefore} blocks)`);
  const vmDir = join(runDir(), 'vms', 'kept-vm');
  const pids = hostPidsSchema.parse(JSON.parse(await readFile(join(vmDir, HOST_PIDS_FILE), 'utf8')));
  worker.kill('SIGKILL');
  await new Promise((r) => worker.once('exit', r));

  assert.ok(await alive(pids.hostPid), 'the VM host outlived the worker');
  assert.ok(pids.qemuPid !== null && (await alive(pids.qemuPid)), 'and so did QEMU');
  assert.ok(await heartbeatAdvances(join(vmDir, 'serial.log')), 'the guest beats on with no worker at all');

  const next = await openCloudlet();
  assert.deepEqual(next.recovery.adopted, ['kept-vm']);
  const described = await next.describe('kept-vm');
  assert.equal(described.runState, 'running');
  // The change tracking survived: the disk's dirty blocks are the host's, not the dead worker's.
  assert.ok(described.dirtyDiskBlocks >= dirtyBefore, `the overlay's block map is intact (${described.dirtyDiskBlocks} dirty blocks, ${dirtyBefore} before the kill)`);
  assert.ok(await heartbeatAdvances(join(vmDir, 'serial.log')), 'the re-adopted guest still beats');

  // A worker's stop (SIGTERM's path) lets go without ending anything.
  await next.stop();
  assert.ok(await alive(pids.hostPid), 'a stopped worker leaves its VMs running');
  const third = await openCloudlet();
  assert.deepEqual(third.recovery.adopted, ['kept-vm']);
  await third.destroyVm('kept-vm');
  await sleep(200);
  assert.equal(await alive(pids.hostPid), false, 'destroying ends the host');
  assert.equal(await alive(pids.qemuPid!), false, 'and QEMU');
  assert.equal(await access(vmDir).then(() => true, () => false), false, "and removes the VM's folder");
  const ramFiles = (await readdir('/dev/shm')).filter((f) => f.startsWith('ehoff-A-kept-vm-'));
  assert.deepEqual(ramFiles, [], 'and its RAM file');
});

test('a host that dies takes its VM: the VM is reported lost by name, and what it left is swept', async () => {
  const cloudlet = await openCloudlet();
  await cloudlet.images.install(base.dir);
  await cloudlet.launchVm('doomed-vm', base.id, { name: 'heartbeat', args: ['4', '100'] });
  const vmDir = join(runDir(), 'vms', 'doomed-vm');
  const pids = hostPidsSchema.parse(JSON.parse(await readFile(join(vmDir, HOST_PIDS_FILE), 'utf8')));
  process.kill(pids.hostPid, 'SIGKILL');
  let described = await cloudlet.describe('doomed-vm').catch(() => undefined);
  for (let i = 0; i < 50 && described?.runState !== 'lost'; i++) {
    await sleep(100);
    described = await cloudlet.describe('doomed-vm').catch(() => undefined);
  }
  assert.equal(described?.runState, 'lost', 'never "running" once its host is gone');
  assert.match(described?.lostReason ?? '', /host process/);
  await sleep(500);
  assert.equal(await alive(pids.qemuPid!), false, "QEMU went with its host (parent-death signal)");
  assert.equal(await access(vmDir).then(() => true, () => false), false, 'its folder was swept');
  const mounts = await readFile('/proc/mounts', 'utf8');
  assert.ok(!mounts.includes(join(vmDir, 'mnt')), 'its FUSE mount was released');
  // A restarted worker still reports it lost, until an operator clears the record.
  await cloudlet.stop();
  const next = await openCloudlet();
  assert.equal((await next.describe('doomed-vm')).runState, 'lost');
  await next.destroyVm('doomed-vm');
  await assert.rejects(next.describe('doomed-vm'), /no VM 'doomed-vm'/);
});
