import type { Command } from 'commander';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { STATE_DIR } from '../../infra/paths.js';
import { EVENT_TYPES, drainProgressQuery, drainWorkflowId, type DrainReport } from '../../workflows/event-definitions.js';
import { postEvent, type PostedEvent } from '../post-event.js';
import { connect, type TemporalTarget } from './connect.js';
import { CliError, EXIT } from './exit-codes.js';

type Globals = () => TemporalTarget;

interface EndpointOptions {
  url: string;
  tokenFile: string;
}

const endpointOptions = (c: Command) =>
  c
    .option('--url <url>', 'the events endpoint (EHOFF_EVENTS_URL)', process.env.EHOFF_EVENTS_URL ?? 'http://127.0.0.1:7280/events')
    .option('--token-file <path>', 'its bearer token (EHOFF_EVENTS_TOKEN_FILE)', process.env.EHOFF_EVENTS_TOKEN_FILE ?? join(STATE_DIR, 'events-token'));

/** `events send` (any CloudEvent, for scripts and tests) and `drain` (a drain event, followed to its end). */
export function eventCommands(program: Command, globals: Globals): void {
  const events = program.command('events').description('CloudEvents to the events endpoint of `npm run serve` / `npm run events`');
  endpointOptions(
    events
      .command('send')
      .description('post one CloudEvent; prints the answer (exit 0 202 accepted, 2 refused or rejected, 4 no endpoint)')
      .requiredOption('--type <type>', `the event type: ${Object.values(EVENT_TYPES).join(', ')}`)
      .requiredOption('--data <json>', 'its data, a JSON object')
      .option('--source <uri>', 'the CloudEvent source (with --id, what makes the event unique)')
      .option('--id <id>', 'the CloudEvent id (a resend with the same source and id is a duplicate)')
      .option('--structured', 'structured mode (one JSON document) instead of binary (ce-* headers)')
      .option('--json', 'print the answer as one JSON line: {"status",…the endpoint body}'),
  ).action(async (o: EndpointOptions & { type: string; data: string; source?: string; id?: string; structured?: boolean; json?: boolean }) => {
    let data: unknown;
    try {
      data = JSON.parse(o.data);
    } catch (err) {
      throw new CliError(`--data is not JSON: ${(err as Error).message}`, EXIT.REJECTED);
    }
    const posted = await send(o, o.type, data, { ...(o.source ? { source: o.source } : {}), ...(o.id ? { id: o.id } : {}), mode: o.structured ? 'structured' : 'binary' });
    printAnswer(posted, o.json);
    exitFor(posted);
  });

  endpointOptions(
    program
      .command('drain')
      .description('move every VM off a cloudlet (a drain event), at most --concurrency at once; follows it to the end')
      .requiredOption('--cloudlet <name>', 'the cloudlet to empty')
      .option('--concurrency <n>', 'handoffs at once', Number)
      .option('--no-wait', 'return once the drain is accepted')
      .option('--json', 'print the drain report as one JSON line at the end'),
  ).action(async (o: EndpointOptions & { cloudlet: string; concurrency?: number; wait: boolean; json?: boolean }) => {
    const posted = await send(o, EVENT_TYPES.drain, { cloudlet: o.cloudlet, ...(o.concurrency !== undefined ? { concurrency: o.concurrency } : {}) });
    if (posted.status !== 202 || posted.body.outcome === 'refused' || !o.wait) {
      printAnswer(posted, o.json && !o.wait);
      exitFor(posted);
      return;
    }
    console.error(`drain of ${o.cloudlet}: ${String(posted.body.outcome)} (${drainWorkflowId(o.cloudlet)})`);
    const { client, close } = await connect(globals());
    try {
      const handle = client.workflow.getHandle(drainWorkflowId(o.cloudlet));
      const report: DrainReport = await handle.result().catch(async () => handle.query(drainProgressQuery));
      if (o.json) console.log(JSON.stringify(report));
      else {
        for (const v of report.vms) console.log(`  ${v.vmId}: ${v.moved ? 'moved' : 'NOT moved'} in ${(v.ms / 1000).toFixed(1)} s — ${v.summary}`);
        console.log(`drain of ${report.cloudlet}: ${report.vms.filter((v) => v.moved).length} of ${report.vms.length} VMs moved in ${(report.totalMs / 1000).toFixed(1)} s, ${report.concurrency} at once; left: ${report.left.join(', ') || 'none'}`);
      }
      if (report.left.length > 0) throw new CliError(`VMs left on ${report.cloudlet}: ${report.left.join(', ')}`, EXIT.FAILED_AT_SOURCE);
    } finally {
      await close();
    }
  });
}

async function send(o: EndpointOptions, type: string, data: unknown, extra: { source?: string; id?: string; mode?: 'binary' | 'structured' } = {}): Promise<PostedEvent> {
  const token = await readFile(o.tokenFile, 'utf8').then((t) => t.trim(), (err: Error) => {
    throw new CliError(`cannot read the events token from ${o.tokenFile} (${err.message}) — \`npm run serve\` makes it; or give --token-file`, EXIT.REJECTED);
  });
  try {
    return await postEvent({ url: o.url, token, type, data, ...extra });
  } catch (err) {
    const cause = (err as Error).cause instanceof Error ? ((err as Error).cause as Error).message : (err as Error).message;
    throw new CliError(`no events endpoint at ${o.url} (${cause}) — start one with \`npm run serve\`, or give --url`, EXIT.UNREACHABLE);
  }
}

function printAnswer(p: PostedEvent, json: boolean | undefined): void {
  if (json) return console.log(JSON.stringify({ status: p.status, ...p.body }));
  if (p.status === 202) {
    const ids = (p.body.workflowIds as string[] | undefined)?.join(', ') || 'none';
    console.log(`${p.sent.type} ${p.sent.id}: ${String(p.body.outcome)} — workflows ${ids}${p.body.reason ? `; ${String(p.body.reason)}` : ''}`);
  } else {
    console.log(`${p.sent.type} ${p.sent.id}: HTTP ${p.status}${p.retryAfter ? ` (retry after ${p.retryAfter} s)` : ''}: ${String(p.body.error ?? JSON.stringify(p.body))}`);
  }
}

function exitFor(p: PostedEvent): void {
  if (p.status !== 202 || p.body.outcome === 'refused') throw new CliError(`the event was not taken (HTTP ${p.status}${p.body.outcome ? `, ${String(p.body.outcome)}` : ''})`, EXIT.REJECTED);
}
