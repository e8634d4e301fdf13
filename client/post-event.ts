import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { CloudEvent, HTTP } from 'cloudevents';

/** What the events endpoint answered: its status, its Retry-After if any, and its JSON body. */
export interface PostedEvent {
  status: number;
  retryAfter: string | null;
  body: Record<string, unknown>;
  /** The event as sent (its id, for a resend of the same event). */
  sent: { type: string; source: string; id: string };
}

/**
 * Posts one CloudEvent to an events endpoint, in binary mode (ce-* headers) or structured mode
 * (one JSON document), built by the CloudEvents SDK. Throws only when nothing answers.
 */
export async function postEvent(o: {
  url: string;
  token: string;
  type: string;
  data: unknown;
  source?: string;
  id?: string;
  mode?: 'binary' | 'structured';
}): Promise<PostedEvent> {
  const event = new CloudEvent({ type: o.type, source: o.source ?? `ehoff-cli://${hostname()}`, id: o.id ?? randomUUID(), datacontenttype: 'application/json', data: o.data });
  const message = o.mode === 'structured' ? HTTP.structured(event) : HTTP.binary(event);
  const res = await fetch(o.url, {
    method: 'POST',
    headers: { ...(message.headers as Record<string, string>), authorization: `Bearer ${o.token}` },
    body: message.body as string,
  });
  const text = await res.text();
  let body: Record<string, unknown>;
  try {
    body = JSON.parse(text) as Record<string, unknown>;
  } catch {
    body = { error: text };
  }
  return { status: res.status, retryAfter: res.headers.get('retry-after'), body, sent: { type: event.type, source: event.source, id: event.id } };
}
