import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { mkdir, rm } from 'node:fs/promises';
import { ensureBaseImage } from '../infra/base-image/build-base-image.js';
import { startEmbeddedCluster, type EmbeddedCluster } from '../infra/embedded-cluster.js';
import { STATE_DIR } from '../infra/paths.js';
import { FAULT_CASES } from './faults/fault-cases.js';
import { runFaultSuite } from './faults/fault-suite.js';

// A representative subset of `npm run test:faults` for CI (the whole table takes ~15 minutes):
// the clean run that the others are measured against, a worker's SIGTERM between handoffs, the
// source worker killed -9 mid-stream and the target worker killed -9 mid-stream (each restarted
// after 5 s, the stream resumed from what the target holds), a target that goes silent with the
// source stopped, the target worker killed -9 mid post-copy (a guest that outruns the link, the
// VM running at B on pages still coming from A), and two handoffs of one VM at once. Each case
// watches both cloudlets' guests.

const SUBSET = [
  'none',
  'SIGTERM of a worker with the VM and a bystander',
  'kill -9 source worker, restarted after 5 s|live epoch ≥ 1',
  'kill -9 target worker, restarted after 5 s|live epoch ≥ 1',
  'a peer that stops answering (no RST)',
  'kill -9 target worker, restarted after 5 s|post-copy',
  'two handoffs of one VM (A→B and A→C, different workflow ids)',
];

let cluster: EmbeddedCluster | undefined;
let baseImageId: string;
const dbFile = join(STATE_DIR, `faults-subset-${process.pid}.db`);

before(async () => {
  const base = await ensureBaseImage({ memoryMiB: 512, accel: 'tcg', log: (l) => console.error(`# ${l}`) });
  baseImageId = base.id;
  await mkdir(STATE_DIR, { recursive: true });
  cluster = await startEmbeddedCluster({
    runTag: 'faults-subset',
    devServer: { dbFile },
    cloudlets: ['A', 'B', 'C'].map((name) => ({ name, baseImages: [base.dir], imageCacheDir: join(STATE_DIR, 'cloudlets', name, 'images') })),
    wan: { mbps: 10, rttMs: 50 },
    workerRestartDelayMs: 5_000,
    log: (l) => console.error(`# ${l}`),
  });
});

after(async () => {
  await cluster?.stop();
  await rm(dbFile, { force: true });
});

test('faults, a subset: the VM ends in exactly one place, verified, bystanders alive, nothing left behind', async () => {
  const cases = SUBSET.map((name) => {
    const [fault, step] = name.split('|');
    const c = FAULT_CASES.find((f) => f.fault === fault && (step === undefined || f.step === step));
    assert.ok(c, `no fault case '${name}'`);
    return c;
  });
  const results = await runFaultSuite(cases, {
    cluster: cluster!,
    baseImageId,
    workload: { name: 'kvstore', args: ['64', '500'] },
    bystanderWorkload: { name: 'heartbeat', args: ['4', '100'] },
    imageCacheDir: (name) => join(STATE_DIR, 'cloudlets', name, 'images'),
    ramDir: () => '/dev/shm',
    log: (l) => console.error(`# ${l}`),
  });
  for (const r of results) {
    assert.equal(r.copiesSeenRunning, 1, `${r.fault} at ${r.step}: one copy running at every sample`);
    assert.deepEqual(r.failures, [], `${r.fault} at ${r.step}: ${r.failures.join('; ')} (${r.detail})`);
    assert.ok(r.expected.includes(r.outcome), `${r.fault} at ${r.step}: ended ${r.outcome}`);
  }
});
