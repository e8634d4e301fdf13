import type { Command } from 'commander';
import { join } from 'node:path';
import { z } from 'zod';
import { SITE_TOPOLOGY_FILE, STATE_DIR } from '../infra/paths.js';

/** The options `npm run serve` and `npm run events` share: where the endpoint listens and how it decides. */
export function eventServiceOptions(c: Command): Command {
  return c
    .option('--host <ip>', 'address the events endpoint listens on', '127.0.0.1')
    .option('--port <n>', 'its port (0: any free one)', '7280')
    .option('--token-file <path>', 'the bearer token senders must present (made, 0600, if missing)', join(STATE_DIR, 'events-token'))
    .option('--site <file>', 'the site topology: cloudlets, places, capacities', SITE_TOPOLOGY_FILE)
    .option('--max-in-flight <n>', 'handoffs running at once before events that would start more get 429', '4')
    .option('--conflict-rule <rule>', 'a move to another target than the one in flight: queue | refuse', 'queue')
    .option('--link-mbps <rate>', "the WAN's nominal rate between cloudlets, Mbit/s: shown in each handoff's summary")
    .option('--post-copy <policy>', 'whether the handoffs events start may switch to post-copy: auto | never (a source host lost mid post-copy loses the VM)', 'never')
    .option('--no-load-monitor', 'do not watch the cloudlets\' load (no edge.cloudlet.overloaded of its own)');
}

export const eventServiceOptionsSchema = z.object({
  host: z.string().min(1),
  port: z.coerce.number().int().min(0).max(65535),
  tokenFile: z.string().min(1),
  site: z.string().min(1),
  maxInFlight: z.coerce.number().int().min(1).max(1000),
  conflictRule: z.enum(['queue', 'refuse']),
  loadMonitor: z.boolean(),
  linkMbps: z.coerce.number().positive().max(100_000).optional(),
  postCopy: z.enum(['auto', 'never']),
});

/** Parses the shared options, naming the first bad flag. */
export function parseEventServiceOptions(raw: unknown): z.infer<typeof eventServiceOptionsSchema> {
  const r = eventServiceOptionsSchema.safeParse(raw);
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  const flag = String(issue.path[0] ?? '?').replace(/[A-Z]/g, (ch) => '-' + ch.toLowerCase());
  throw new Error(`--${flag}: ${issue.message}`);
}
