import { Command } from 'commander';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { ensureBaseImage } from '../infra/base-image/build-base-image.js';
import { startEmbeddedCluster, type EmbeddedCluster } from '../infra/embedded-cluster.js';
import { createLogger, logLineWriter } from '../infra/logger.js';
import { STATE_DIR } from '../infra/paths.js';
import { loadSiteTopology } from '../engine/placement/load-site-topology.js';
import { cloudletNameSchema } from '../engine/names.js';
import { startEventsService, type EventsService } from '../events/events-service.js';
import { eventServiceOptions, parseEventServiceOptions } from '../events/service-options.js';
import { ensureTokenFile } from '../events/token-file.js';

/**
 * npm run serve: the system as a service on the embedded default — a Temporal dev server with its
 * UI, one worker per cloudlet (on the shaped WAN testbed with --mbps, else on loopback), and the
 * events endpoint; up until SIGINT/SIGTERM, then everything it started is stopped.
 */
async function main(): Promise<void> {
  const program = eventServiceOptions(
    new Command('serve')
      .description('the embedded default as a service: Temporal dev server + UI, cloudlet workers, CloudEvents endpoint')
      .option('--cloudlets <names>', 'cloudlets to run, comma-separated (each must be in the site topology)', 'A,B,C')
      .option('--mbps <rate>', 'put the cloudlets on the WAN testbed, links shaped to this rate (Mbit/s)')
      .option('--rtt-ms <ms>', 'round trip between cloudlets on the testbed', '50')
      .option('--memory-mib <n>', "the base image's guest RAM", '512')
      .option('--bare <names>', 'cloudlets that start without the base image (a new site): a handoff to one fetches it from its source first', '')
      .option('--fresh', 'start with an empty Temporal database (histories of earlier runs are dropped)', false)
      .option('--json', 'print one JSON line when ready: {"ready":true,"events","ui","tokenFile",…}', false),
  );
  program.parse();
  const o = program.opts<Record<string, string | boolean | undefined>>();
  const log = createLogger('serve');
  let cluster: EmbeddedCluster | undefined;
  let events: EventsService | undefined;
  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      log.info('stopping: events endpoint, workers, VMs, Temporal dev server');
      await events?.stop().catch((err: Error) => log.error({ err: err.message }, 'events service stop failed'));
      await cluster?.stop();
    })());
  const stopped = new Promise<void>((resolve) => {
    const onSignal = (signal: string) => {
      log.info({ signal }, 'signal received');
      void stop().then(resolve);
    };
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
  });
  try {
    const opts = parseEventServiceOptions(o);
    const names = String(o.cloudlets).split(',').map((n) => n.trim()).filter(Boolean);
    for (const n of names) cloudletNameSchema.parse(n);
    const site = await loadSiteTopology(opts.site);
    const bare = String(o.bare).split(',').map((n) => n.trim()).filter(Boolean);
    const notRun = bare.filter((n) => !names.includes(n));
    if (notRun.length > 0) throw new Error(`--bare: ${notRun.join(', ')} not among --cloudlets ${names.join(',')}`);
    const unknown = names.filter((n) => !site.cloudlets.some((c) => c.name === n));
    if (unknown.length > 0) throw new Error(`--cloudlets: ${unknown.join(', ')} not in the site topology ${opts.site} (${site.cloudlets.map((c) => c.name).join(', ')})`);
    const mbps = o.mbps === undefined ? undefined : Number(o.mbps);
    if (mbps !== undefined && !(mbps > 0 && mbps <= 10_000)) throw new Error(`--mbps must be a rate in Mbit/s (e.g. 10), got ${String(o.mbps)}`);
    const rttMs = Number(o.rttMs);
    if (!(rttMs >= 0 && rttMs <= 2_000)) throw new Error(`--rtt-ms must be between 0 and 2000, got ${String(o.rttMs)}`);
    const memoryMiB = Number(o.memoryMib);
    if (!Number.isInteger(memoryMiB) || memoryMiB < 128) throw new Error(`--memory-mib must be an integer ≥ 128, got ${String(o.memoryMib)}`);

    const token = await ensureTokenFile(opts.tokenFile);
    const base = await ensureBaseImage({ memoryMiB, accel: 'tcg', log: (line) => log.info(line) });
    const dbFile = join(STATE_DIR, 'serve', 'temporal.db');
    await mkdir(join(STATE_DIR, 'serve'), { recursive: true });
    if (o.fresh) await rm(dbFile, { force: true });
    cluster = await startEmbeddedCluster({
      runTag: 'serve',
      devServer: { dbFile, preferredPort: 7233, preferredUiPort: 8233 },
      cloudlets: names.map((name) => ({ name, baseImages: bare.includes(name) ? [] : [base.dir], imageCacheDir: join(STATE_DIR, 'cloudlets', name, 'images') })),
      ...(mbps !== undefined ? { wan: { mbps, rttMs } } : {}),
      log: (line) => log.info(line),
      // The workers' own JSON lines, as they are, into this service's log.
      workerLog: logLineWriter(),
    });
    events = await startEventsService({
      temporal: cluster.temporal,
      host: opts.host,
      port: opts.port,
      token,
      site,
      conflictRule: opts.conflictRule,
      maxInFlight: opts.maxInFlight,
      loadMonitor: opts.loadMonitor,
      defaultBaseImageId: base.id,
      ...(opts.linkMbps !== undefined || mbps !== undefined ? { linkMbps: opts.linkMbps ?? mbps } : {}),
      postCopy: opts.postCopy,
      log: createLogger('events'),
    });
    const ready = {
      ready: true,
      events: events.url,
      ui: cluster.uiUrl ?? null,
      tokenFile: opts.tokenFile,
      temporalAddress: cluster.address,
      cloudlets: names,
      baseImageId: base.id,
      ...(mbps !== undefined ? { mbps, rttMs } : {}),
    };
    if (o.json) console.log(JSON.stringify(ready));
    else {
      console.log(
        [
          `edge-handoff is up: cloudlets ${names.join(', ')}${mbps !== undefined ? ` on a ${mbps} Mbit/s, ${rttMs} ms WAN` : ' on loopback'}, base image ${base.id}`,
          `  events   POST ${events.url}  (Authorization: Bearer $(cat ${opts.tokenFile}))`,
          `  UI       ${cluster.uiUrl}`,
          `  Temporal ${cluster.address}  (npm run ehoff -- --address ${cluster.address} status --vm <id>)`,
          `  try: npm run ehoff -- events send --type edge.vm.launch --data '{"vmId":"vm1","workload":{"name":"kvstore","args":["64","500","50"]}}'`,
          'Ctrl-C stops everything it started.',
        ].join('\n'),
      );
    }
    await stopped;
  } catch (err) {
    log.error({ err: (err as Error).message }, 'serve failed');
    console.error(`serve: ${(err as Error).message}`);
    await stop();
    process.exit(1);
  }
}

void main().then(() => process.exit(0));
