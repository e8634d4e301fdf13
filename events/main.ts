import { Command } from 'commander';
import { loadSiteTopology } from '../engine/placement/load-site-topology.js';
import { baseImageIdSchema } from '../engine/names.js';
import { createLogger } from '../infra/logger.js';
import { temporalTarget } from '../infra/temporal-connection.js';
import { startEventsService } from './events-service.js';
import { eventServiceOptions, parseEventServiceOptions } from './service-options.js';
import { ensureTokenFile } from './token-file.js';

/**
 * npm run events: the events endpoint alone, against a Temporal server and cloudlet workers that
 * run already: the flags, else the temporal.toml profile and TEMPORAL_* variables (address,
 * namespace, TLS with client certificates, API key; see infra/temporal-connection.ts).
 */
async function main(): Promise<void> {
  const program = eventServiceOptions(
    new Command('events')
      .description('CloudEvents in: POST /events, against an existing Temporal server and cloudlet workers')
      .option('--address <host:port>', 'the Temporal server (default: TEMPORAL_ADDRESS, the profile\'s, or 127.0.0.1:7233)')
      .option('--namespace <name>', 'its namespace (default: TEMPORAL_NAMESPACE, the profile\'s, or default)')
      .option('--profile <name>', 'a temporal.toml profile (default: TEMPORAL_PROFILE or default)')
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
    const temporal = temporalTarget({ address: o.address as string | undefined, namespace: o.namespace as string | undefined, profile: o.profile as string | undefined });
    const service = await startEventsService({
      temporal,
      host: opts.host,
      port: opts.port,
      token,
      site: await loadSiteTopology(opts.site),
      conflictRule: opts.conflictRule,
      maxInFlight: opts.maxInFlight,
      loadMonitor: opts.loadMonitor,
      ...(base ? { defaultBaseImageId: base } : {}),
      ...(opts.linkMbps !== undefined ? { linkMbps: opts.linkMbps } : {}),
      postCopy: opts.postCopy,
      log,
    });
    const ready = { ready: true, events: service.url, tokenFile: opts.tokenFile, temporalAddress: temporal.address };
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
