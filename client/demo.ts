import { join } from 'node:path';
import { mkdir } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { ensureBaseImage } from '../infra/base-image/build-base-image.js';
import { startEmbeddedCluster } from '../infra/embedded-cluster.js';
import { STATE_DIR } from '../infra/paths.js';
import type { HandoffResult } from '../workflows/definitions.js';
import { describeVm, launchVm } from '../workflows/vm-lifecycle.js';
import { executeWorkflow } from './execute-workflow.js';
import { runHandoff } from './start-handoff.js';
import { progressPrinter, summarize } from './progress-printer.js';

/**
 * The main job on the embedded default: a Temporal dev server, two cloudlet workers (A, B), a VM
 * with a workload on A, and a handoff of that VM to B, with progress and the result. Then (unless
 * --skip-post-copy) a second VM whose guest rewrites memory faster than the link (capped at
 * POST_COPY_CAP_MBPS) drains it, moved with post-copy allowed: the hybrid handoff.
 */
async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      json: { type: 'boolean', default: false },
      'memory-mib': { type: 'string', default: '512' },
      workload: { type: 'string', default: 'kvstore' },
      'workload-mib': { type: 'string', default: '64' },
      'run-seconds': { type: 'string', default: '5' },
      keep: { type: 'boolean', default: false },
      mbps: { type: 'string' },
      /** Round trip between the cloudlets, with --mbps; the WAN: 50 ms. */
      'rtt-ms': { type: 'string', default: '50' },
      'skip-post-copy': { type: 'boolean', default: false },
    },
  });
  const memoryMiB = Number(values['memory-mib']);
  const workloadMiB = Number(values['workload-mib']);
  if (!Number.isInteger(memoryMiB) || memoryMiB < 128) throw new Error(`--memory-mib must be an integer ≥ 128, got ${values['memory-mib']}`);
  if (!Number.isInteger(workloadMiB) || workloadMiB < 0 || workloadMiB > memoryMiB / 2) {
    throw new Error(`--workload-mib must be an integer between 0 and half of --memory-mib, got ${values['workload-mib']}`);
  }
  const mbps = values.mbps === undefined ? undefined : Number(values.mbps);
  if (mbps !== undefined && !(mbps > 0 && mbps <= 10_000)) throw new Error(`--mbps must be a rate in Mbit/s (e.g. 10), got ${values.mbps}`);
  const rttMs = Number(values['rtt-ms']);
  if (!(rttMs >= 0 && rttMs <= 2_000)) throw new Error(`--rtt-ms must be a round trip in ms between 0 and 2000, got ${values['rtt-ms']}`);
  const say = (line: string) => console.log(line);
  const t0 = Date.now();

  const base = await ensureBaseImage({ memoryMiB, accel: 'tcg', log: say });
  say(`base image ${base.id} (${memoryMiB} MiB RAM, 8 GiB disk)`);
  await mkdir(STATE_DIR, { recursive: true });
  const cluster = await startEmbeddedCluster({
    runTag: `demo-${process.pid}`,
    devServer: { dbFile: join(STATE_DIR, 'temporal.db'), preferredPort: 7233, preferredUiPort: 8233 },
    cloudlets: ['A', 'B'].map((name) => ({ name, baseImages: [base.dir], imageCacheDir: join(STATE_DIR, 'cloudlets', name, 'images') })),
    ...(mbps !== undefined ? { wan: { mbps, rttMs } } : {}),
    log: say,
  });
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    await cluster.stop();
  };
  process.once('SIGINT', () => void stop().then(() => process.exit(130)));
  let summary: Record<string, unknown> = {};
  try {
    say(`Temporal UI: ${cluster.uiUrl}`);
    const vmId = 'demo-vm';
    const launched = await executeWorkflow(cluster.client, launchVm, { vmId, cloudlet: 'A', baseImageId: base.id, workload: demoWorkload(values.workload, workloadMiB) });
    say(`VM ${vmId} running on A (heartbeat ${launched.lastHeartbeat}); letting its workload run ${values['run-seconds']} s`);
    await sleep(Number(values['run-seconds']) * 1000);

    say(`handoff of ${vmId}: A → B`);
    const result: HandoffResult = await runHandoff(cluster.client, { vmId, source: 'A', target: 'B' }, progressPrinter(say));
    for (const line of summarize(result)) say(line);
    const after = await executeWorkflow(cluster.client, describeVm, { vmId, cloudlet: 'B' });
    say(`on B now: ${after.runState}, heartbeat ${after.lastHeartbeat}`);
    say(`the handoff's history, with its five steps: ${cluster.uiUrl}/namespaces/default/workflows/${result.workflowId}`);
    let postCopy: HandoffResult | null = null;
    if (!values['skip-post-copy']) {
      const fluidId = 'demo-fluid';
      await executeWorkflow(cluster.client, launchVm, { vmId: fluidId, cloudlet: 'A', baseImageId: base.id, workload: { name: 'fluid', args: ['32', '50', '64'] } });
      say(`VM ${fluidId} running on A: two 32 MiB grids rewritten as fast as the guest runs, more than ${POST_COPY_CAP_MBPS} Mbit/s drains, and 64 KiB/s of checkpoints synced to its disk`);
      await sleep(Number(values['run-seconds']) * 1000);
      say(`handoff of ${fluidId}: A → B, capped at ${POST_COPY_CAP_MBPS} Mbit/s, post-copy allowed`);
      postCopy = await runHandoff(cluster.client, { vmId: fluidId, source: 'A', target: 'B', bandwidthCapMbps: POST_COPY_CAP_MBPS, postCopy: 'auto' }, progressPrinter(say));
      for (const line of summarize(postCopy)) say(line);
    }
    say(`demo finished in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    if (values.keep) {
      say('--keep: the dev server and its UI stay up; Ctrl-C stops everything');
      await new Promise(() => undefined);
    }
    const { workflowId, vmId: id, source, target, totalMs, downtimeMs, guestGapMs, bytesSent, verified, guestContinued } = result;
    summary = {
      workflowId, vmId: id, source, target, totalMs, downtimeMs, guestGapMs, bytesSent, verified, guestContinued, mbps: mbps ?? null, uiUrl: cluster.uiUrl, result,
      postCopy: postCopy && { workflowId: postCopy.workflowId, totalMs: postCopy.totalMs, downtimeMs: postCopy.downtimeMs, guestGapMs: postCopy.guestGapMs, postCopy: postCopy.postCopy },
    };
  } finally {
    await stop();
  }
  // After teardown, so that it is the last line.
  if (values.json) console.log(JSON.stringify(summary));
}

/** The post-copy part's cap: the demo's link is loopback unless --mbps says otherwise. */
const POST_COPY_CAP_MBPS = 40;

/**
 * kvstore: text-like records under updates (the default); heartbeat: a counter and a small heap.
 * Both beat every 50 ms, so the guest-side gap overstates the pause by at most that.
 */
function demoWorkload(name: string, mib: number): { name: string; args: string[] } {
  if (name === 'kvstore') return { name, args: [String(mib), '500', '50'] };
  if (name === 'heartbeat') return { name, args: [String(mib), '50'] };
  throw new Error(`--workload must be kvstore or heartbeat, got ${name}`);
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(`demo failed: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  },
);
