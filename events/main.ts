import { Command } from 'commander';
import { loadSiteTopology } from '../engine/placement/load-site-topology.js';
import { baseImageIdSchema } from '../engine/names.js';
import { createLogger } from '../infra/logger.js';
import { startEventsService } from './events-service.js';
import { eventServiceOptions, parseEventServiceOptions } from './service-options.js';
import { ensureTokenFile } from './token-file.js';

/**
 * npm run events: the events endpoint alone, against a Temporal server and cloudlet workers that
 * run already (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, or the flags).
 */
async function main(): Promise<void> {
  const program = eventServiceOptions(
    new Command('events')
      .description('CloudEvents in: POST /events, against an existing Temporal server and cloudlet workers')
      .option('--address <host:port>', 'the Temporal server (TEMPORAL_ADDRESS)', process.env.TEMPORAL_ADDRESS ?? '127.0.0.1:7233')
      .option('--namespace <name>', 'its namespace (TEMPORAL_NAMESPACE)', process.env.TEMPORAL_NAMESPACE ?? 'default')
      .option('--base-image <id>', 'the base image a launch uses when its event names none')
      .option('--json', 'print one JSON line when ready', false),
  );
  program.parse();
  const o = program.opts<Record<string, string | boolean | undefined>>();
  const log = createLogger('events');
  try {
    const opts = parseEventServiceOptions(o);
    const base = o.baseImage === undefined ? undefined : baseImageIdSchema.parse(o.baseImage);
    const token = await ensureTokenFile(opts.tokenFile);
    const service = await startEventsService({
      temporalAddress: String(o.address),
      namespace: String(o.namespace),
      host: opts.host,
      port: opts.port,
      token,
      site: await loadSiteTopology(opts.site),
      conflictRule: opts.conflictRule,
      maxInFlight: opts.maxInFlight,
      loadMonitor: opts.loadMonitor,
      ...(base ? { defaultBaseImageId: base } : {}),
      log,
    });
    const ready = { ready: true, events: service.url, tokenFile: opts.tokenFile, temporalAddress: o.address };
    console.log(o.json ? JSON.stringify(ready) : `events endpoint ${service.url} (token in ${opts.tokenFile}); Ctrl-C stops it`);
    await new Promise<void>((resolve) => {
      process.once('SIGINT', resolve);
      process.once('SIGTERM', resolve);
    });
    await service.stop();
  } catch (err) {
    log.error({ err: (err as Error).message }, 'events service failed');
    console.error(`events: ${(err as Error).message}`);
    process.exit(1);
  }
}

void main().then(() => process.exit(0));
