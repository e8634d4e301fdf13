import { parseArgs } from 'node:util';
import { NativeConnection, Runtime, Worker, makeTelemetryFilterString, type NativeConnectionOptions } from '@temporalio/worker';
import { z } from 'zod';
import { Client } from '@temporalio/client';
import { createCloudletActivities } from '../activities/cloudlet-activities.js';
import { createSiteActivities } from '../activities/site-activities.js';
import { createSourceActivities } from '../activities/source-activities.js';
import { createTargetActivities } from '../activities/target-activities.js';
import { Cloudlet } from '../engine/cloudlet/cloudlet.js';
import { SourceHandoffs, recoverSourceAfterRestart } from '../engine/handoff/source-handoff.js';
import { TargetHandoffs } from '../engine/handoff/target-handoff.js';
import { cloudletNameSchema } from '../engine/names.js';
import { loadCloudletTls, tlsFilesFromEnv } from '../engine/wire/cloudlet-tls.js';
import { PREFIX } from '../infra/paths.js';
import { createLogger } from '../infra/logger.js';
import { connectTo, temporalTarget } from '../infra/temporal-connection.js';
import { WORKFLOW_TASK_QUEUE, cloudletTaskQueue } from '../workflows/definitions.js';
import { EVENTS_TASK_QUEUE } from '../workflows/event-definitions.js';
import { dirtyLogAvailability } from '../engine/memory/dirty-log.js';
import { pageScanImplementation } from '../engine/memory/native-page-scan.js';
import { deferred } from '../engine/deferred.js';

/**
 * One cloudlet's worker process: a Temporal client that drives the cloudlet's VMs through their
 * host processes (which outlive it: see engine/host), polls the cloudlet's own task queue for its
 * activities, and the shared queue for workflow tasks. It may exit at any time, by a crash or a
 * stop; the next one re-adopts the VMs from the run folder.
 */
const configSchema = z.object({
  cloudlet: cloudletNameSchema,
  runDir: z.string().min(1),
  imageCache: z.string().min(1),
  /** A tmpfs folder for the VMs' RAM files (a site may give its VMs their own). */
  ramDir: z.string().min(1).default('/dev/shm'),
  dataHost: z.string().default('127.0.0.1'),
  dataPort: z.coerce.number().int().min(0).max(65535).default(0),
  /** Over the temporal.toml profile and TEMPORAL_* variables (see infra/temporal-connection.ts). */
  temporalAddress: z.string().min(1).optional(),
  namespace: z.string().min(1).optional(),
  temporalProfile: z.string().min(1).optional(),
  /** The embedded dev server: plaintext, no profile or TEMPORAL_* variables read. */
  temporalPlain: z.boolean().default(false),
  workflowBundle: z.string().optional(),
  installBase: z.array(z.string()).default([]),
  /** The cloudlet's certificate, key and the site CA (PEM files): the data plane is mutual TLS only. */
  tlsCert: z.string({ error: 'is required (or EHOFF_TLS_CERT): the cloudlet certificate, PEM' }).min(1),
  tlsKey: z.string({ error: 'is required (or EHOFF_TLS_KEY): the cloudlet key, PEM' }).min(1),
  tlsCa: z.string({ error: 'is required (or EHOFF_TLS_CA): the site CA certificate, PEM' }).min(1),
  /** Where each stream attempt from here writes its per-second trace (or EHOFF_TRACE_DIR); none if unset. */
  traceDir: z.string().min(1).optional(),
});
export type CloudletWorkerConfig = z.infer<typeof configSchema>;

/** The line a parent process waits for before it relies on this worker. */
export const READY_MARKER = 'EHOFF-WORKER-READY';

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      cloudlet: { type: 'string' },
      'run-dir': { type: 'string' },
      'image-cache': { type: 'string' },
      'ram-dir': { type: 'string' },
      'data-host': { type: 'string' },
      'data-port': { type: 'string' },
      'temporal-address': { type: 'string' },
      namespace: { type: 'string' },
      'temporal-profile': { type: 'string' },
      'temporal-plain': { type: 'boolean' },
      'workflow-bundle': { type: 'string' },
      'install-base': { type: 'string', multiple: true },
      'tls-cert': { type: 'string' },
      'tls-key': { type: 'string' },
      'tls-ca': { type: 'string' },
      'trace-dir': { type: 'string' },
    },
  });
  const fromEnv = tlsFilesFromEnv();
  const parsed = configSchema.safeParse({
    cloudlet: values.cloudlet,
    runDir: values['run-dir'],
    imageCache: values['image-cache'],
    ramDir: values['ram-dir'],
    dataHost: values['data-host'],
    dataPort: values['data-port'],
    temporalAddress: values['temporal-address'],
    namespace: values.namespace,
    temporalProfile: values['temporal-profile'],
    temporalPlain: values['temporal-plain'],
    workflowBundle: values['workflow-bundle'],
    installBase: values['install-base'],
    tlsCert: values['tls-cert'] ?? fromEnv.certFile,
    tlsKey: values['tls-key'] ?? fromEnv.keyFile,
    tlsCa: values['tls-ca'] ?? fromEnv.caFile,
    traceDir: values['trace-dir'] ?? (process.env.EHOFF_TRACE_DIR || undefined),
  });
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    console.error(`cloudlet worker: option --${String(issue?.path[0] ?? '?').replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())}: ${issue?.message}`);
    process.exit(2);
  }
  await runCloudletWorker(parsed.data);
}

export async function runCloudletWorker(config: CloudletWorkerConfig): Promise<void> {
  // JSON lines on stderr (readable on a terminal); stdout carries only the ready line.
  const log = createLogger('worker', { cloudlet: config.cloudlet });
  Runtime.install({
    telemetryOptions: { logging: { filter: makeTelemetryFilterString({ core: 'ERROR' }), forward: {} } },
    logger: { trace() {}, debug() {}, info() {}, warn: (m, meta) => log.warn({ sdk: meta }, m), error: (m, meta) => log.error({ sdk: meta }, m), log() {} },
  });
  const tls = await loadCloudletTls(config.cloudlet, { certFile: config.tlsCert, keyFile: config.tlsKey, caFile: config.tlsCa }).catch((err: Error) => {
    console.error(`cloudlet worker: ${err.message}`);
    process.exit(2);
  });
  const cloudlet = new Cloudlet({
    name: config.cloudlet,
    runDir: config.runDir,
    imageCacheDir: config.imageCache,
    ramDir: config.ramDir,
    dataHost: config.dataHost,
    dataPort: config.dataPort,
    prefix: PREFIX,
    tls,
    log: (line) => log.warn(line),
  });
  // The data plane listens from `start` on; a source's hello waits until the incoming handoffs
  // the last worker left are taken up, so a retried attempt is not refused as unknown.
  const incomingTakenUp = deferred<void>();
  cloudlet.dataPlane.holdHellosUntil(incomingTakenUp.promise);
  await cloudlet.start();
  const target = new TargetHandoffs(cloudlet);
  const incoming = await target
    .recover()
    .catch((err: Error) => {
      log.error({ err: err.message }, 'incoming handoffs could not be taken up');
      return { recovered: [] as string[], discarded: [] as string[] };
    })
    .finally(() => incomingTakenUp.resolve());
  const { adopted, lost, swept } = cloudlet.recovery;
  if (adopted.length + lost.length + swept.length + incoming.recovered.length + incoming.discarded.length > 0) {
    log.info(
      { adopted, lost, swept: swept.length, incoming },
      `re-adopted VMs: ${adopted.join(', ') || 'none'}; incoming handoffs taken up: ${incoming.recovered.join(', ') || 'none'}; ` +
        `incoming copies ended: ${incoming.discarded.join(', ') || 'none'}; lost (host gone): ${lost.join(', ') || 'none'}; swept: ${swept.length} leftovers`,
    );
  }
  // A handoff whose stream died with the previous worker: its persisted phase decides.
  // One VM that cannot be recovered must not keep the worker (and every other VM's handoff) down.
  for (const vm of cloudlet.vmList()) {
    try {
      const decision = await recoverSourceAfterRestart(vm);
      if (decision.action !== 'nothing') log.info({ vmId: vm.vmId, action: decision.action }, `VM ${vm.vmId}: ${decision.action} (${decision.reason})`);
    } catch (err) {
      log.error({ vmId: vm.vmId, err: (err as Error).message }, `VM ${vm.vmId}: its handoff could not be recovered`);
    }
  }
  // Post-copies the last worker served or fetched: the stopped copies' pages served again, the
  // missing pages of VMs running here fetched again.
  const source = new SourceHandoffs(cloudlet);
  const notTakenUp = (side: string) => (err: Error) => (log.error({ err: err.message }, `post-copies ${side} could not be taken up`), [] as string[]);
  const postCopies = { served: await source.recoverPostCopies().catch(notTakenUp('served')), fetched: await target.recoverPostCopies().catch(notTakenUp('fetched')) };
  if (postCopies.served.length + postCopies.fetched.length > 0) log.info(postCopies, `post-copies taken up: serving ${postCopies.served.join(', ') || 'none'}; fetching ${postCopies.fetched.join(', ') || 'none'}`);
  log.info({ pageScan: pageScanImplementation(), dirtyLog: dirtyLogAvailability() }, 'changed-pages scan');
  for (const dir of config.installBase) {
    const image = await cloudlet.images.install(dir);
    log.info({ baseImageId: image.manifest.id }, 'base image in cache');
  }
  const temporal = temporalTarget({ address: config.temporalAddress, namespace: config.namespace, profile: config.temporalProfile, plain: config.temporalPlain });
  const connection = await NativeConnection.connect(temporal.connectionOptions as NativeConnectionOptions);
  const activityWorker = await Worker.create({
    connection,
    namespace: temporal.namespace,
    taskQueue: cloudletTaskQueue(config.cloudlet),
    // The SDK sends at most one heartbeat per 0.8 × the heartbeat timeout unless told otherwise:
    // every second keeps a margin of four beats under the stream's 5 s timeout.
    maxHeartbeatThrottleInterval: '1 second',
    activities: {
      ...createCloudletActivities(cloudlet),
      ...createSourceActivities(source, { traceDir: config.traceDir }),
      ...createTargetActivities(target),
    },
  });
  // What event workflows ask of Temporal itself (which cloudlets poll, the handoff in flight for a
  // VM, waiting for one to end): any cloudlet's worker answers, so no single process is needed.
  const siteConnection = await connectTo(temporal);
  const siteWorker = await Worker.create({
    connection,
    namespace: temporal.namespace,
    taskQueue: EVENTS_TASK_QUEUE,
    activities: createSiteActivities(new Client({ connection: siteConnection, namespace: temporal.namespace })),
  });
  const workflowWorker = await Worker.create({
    connection,
    namespace: temporal.namespace,
    taskQueue: WORKFLOW_TASK_QUEUE,
    ...(config.workflowBundle
      ? { workflowBundle: { codePath: config.workflowBundle } }
      : { workflowsPath: new URL('../workflows/index.ts', import.meta.url).pathname }),
  });
  const shutdown = () => {
    activityWorker.shutdown();
    siteWorker.shutdown();
    workflowWorker.shutdown();
  };
  process.once('SIGINT', shutdown);
  process.once('SIGTERM', shutdown);
  const address = cloudlet.dataPlane.address();
  console.log(`${READY_MARKER} ${JSON.stringify({ cloudlet: config.cloudlet, taskQueue: cloudletTaskQueue(config.cloudlet), dataPlane: address, pid: process.pid })}`);
  try {
    await Promise.all([activityWorker.run(), siteWorker.run(), workflowWorker.run()]);
  } finally {
    // The VMs go on in their hosts; the next worker of this cloudlet re-adopts them.
    await cloudlet.stop();
    await connection.close();
    await siteConnection.close();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((err) => {
    console.error(`cloudlet worker failed: ${err instanceof Error ? err.stack : String(err)}`);
    process.exit(1);
  });
}
