import { join } from 'node:path';
import { ensureBaseImage } from '../../infra/base-image/build-base-image.js';
import { startEmbeddedCluster } from '../../infra/embedded-cluster.js';
import { STATE_DIR } from '../../infra/paths.js';
import { WORKFLOW_TASK_QUEUE, progressQuery } from '../../workflows/definitions.js';
import { executeWorkflow } from '../../client/execute-workflow.js';
import { handoff } from '../../workflows/handoff.js';
import { launchVm } from '../../workflows/vm-lifecycle.js';

// The doomed run of the crash case: a cluster on the WAN testbed, a VM handed from A to B; it
// says STREAMING once the stream runs, and is then killed -9 with its workers by the fault suite.
const runTag = process.argv[2]!;
const base = await ensureBaseImage({ memoryMiB: 512, accel: 'tcg', log: () => undefined });
const cluster = await startEmbeddedCluster({
  runTag,
  devServer: { dbFile: join(STATE_DIR, `${runTag}.db`) },
  cloudlets: ['A', 'B'].map((name) => ({ name, baseImages: [base.dir], imageCacheDir: join(STATE_DIR, 'cloudlets', name, 'images') })),
  wan: { mbps: 10, rttMs: 50 },
});
await executeWorkflow(cluster.client, launchVm, { vmId: 'doomed-vm', cloudlet: 'A', baseImageId: base.id, workload: { name: 'kvstore', args: ['64', '500'] } });
const handle = await cluster.client.workflow.start(handoff, { taskQueue: WORKFLOW_TASK_QUEUE, workflowId: `doomed-${Date.now()}`, args: [{ vmId: 'doomed-vm', source: 'A', target: 'B' }] });
for (;;) {
  const p = await handle.query(progressQuery).catch(() => undefined);
  if (p?.step === 'stream') break;
  await new Promise((r) => setTimeout(r, 100));
}
await new Promise((r) => setTimeout(r, 3_000));
console.log('STREAMING');
setInterval(() => undefined, 60_000);
