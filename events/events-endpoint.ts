import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { Admitted } from './admit-event.js';
import { readCloudEvent, type ReceivedEvent } from './read-cloudevent.js';

/** One CloudEvent is a few hundred bytes; anything near this is not one. */
const MAX_BODY_BYTES = 64 * 1024;

export interface EventsEndpoint {
  /** http://host:port/events */
  url: string;
  close(): Promise<void>;
}

/**
 * The HTTP side of the event service: POST /events (one CloudEvent, bearer token), GET /healthz.
 * Answers 202 with the event's admission, 400 naming what is wrong, 401, 405, 413, 415, 429 with
 * Retry-After, 503 when Temporal does not answer. Everything else is `admit`'s.
 */
export async function startEventsEndpoint(o: {
  host: string;
  port: number;
  token: string;
  admit: (event: ReceivedEvent) => Promise<Admitted>;
  log: Logger;
}): Promise<EventsEndpoint> {
  const expected = createHash('sha256').update(o.token).digest();
  const authorized = (req: IncomingMessage) => {
    const m = /^Bearer (\S+)$/.exec(req.headers.authorization ?? '');
    return m !== null && timingSafeEqual(createHash('sha256').update(m[1]!).digest(), expected);
  };
  const server = createServer((req, res) => {
    handle(req, res).catch((err: Error) => {
      o.log.error({ err: err.message }, 'event request failed');
      if (!res.headersSent) send(res, 500, { error: `internal error: ${err.message}` });
    });
  });
  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/healthz' && req.method === 'GET') return send(res, 200, { ok: true });
    if (path !== '/events') return send(res, 404, { error: `no ${path} here: events are POSTed to /events` });
    if (req.method !== 'POST') return send(res, 405, { error: 'POST a CloudEvent to /events' }, { Allow: 'POST' });
    if (!authorized(req)) return send(res, 401, { error: 'missing or wrong bearer token (Authorization: Bearer <the token in the service\'s tokenFile>)' }, { 'WWW-Authenticate': 'Bearer realm="edge-handoff events"' });
    const body = await readBody(req);
    if (body === 'too-large') return send(res, 413, { error: `a CloudEvent here is at most ${MAX_BODY_BYTES} bytes` });
    const read = readCloudEvent(req.headers, body);
    if (!read.ok) {
      o.log.info({ status: read.status, error: read.error }, 'event refused');
      return send(res, read.status, { error: read.error });
    }
    const { event } = read;
    let admitted: Admitted;
    try {
      admitted = await o.admit(event);
    } catch (err) {
      if (isUnavailable(err)) return send(res, 503, { error: `Temporal does not answer: ${(err as Error).message}` }, { 'Retry-After': '5' });
      throw err;
    }
    const ids = { eventType: event.type, eventSource: event.source, eventId: event.id };
    if (admitted.status === 429) {
      o.log.info({ ...ids, status: 429 }, admitted.error);
      return send(res, 429, { error: admitted.error }, { 'Retry-After': String(admitted.retryAfterS) });
    }
    const { eventWorkflowId, ...answer } = admitted.admission;
    o.log.info({ ...ids, workflowId: eventWorkflowId, outcome: answer.outcome, workflowIds: answer.workflowIds, reason: answer.reason }, 'event admitted');
    return send(res, 202, { ...answer, eventWorkflowId });
  };
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.host, () => resolve());
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : o.port;
  return {
    url: `http://${o.host}:${port}/events`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(`${JSON.stringify(body)}\n`);
}

async function readBody(req: IncomingMessage): Promise<Buffer | 'too-large'> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES) return 'too-large';
    parts.push(chunk as Buffer);
  }
  return Buffer.concat(parts);
}

/** gRPC UNAVAILABLE (14) or DEADLINE_EXCEEDED (4): the server is down or unreachable. */
function isUnavailable(err: unknown): boolean {
  const code = (err as { code?: number; cause?: { code?: number } }).code ?? (err as { cause?: { code?: number } }).cause?.code;
  return code === 14 || code === 4;
}
