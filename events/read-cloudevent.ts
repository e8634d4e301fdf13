import type { IncomingHttpHeaders } from 'node:http';
import { HTTP, type CloudEvent } from 'cloudevents';
import { EVENT_TYPES, eventDataSchemas, isEdgeEventType, type EdgeEventType } from '../workflows/event-definitions.js';

/** A CloudEvent as the site acts on it: its identity, its type and its data, checked. */
export interface ReceivedEvent {
  type: EdgeEventType;
  source: string;
  id: string;
  time?: string;
  data: unknown;
}

export type ReadResult = { ok: true; event: ReceivedEvent } | { ok: false; status: 400 | 415; error: string };

const STRUCTURED = 'application/cloudevents+json';
const BATCH = 'application/cloudevents-batch+json';
const REQUIRED = ['specversion', 'id', 'source', 'type'] as const;

/**
 * Reads one CloudEvent 1.0 from an HTTP request (HTTP protocol binding): structured mode
 * (`application/cloudevents+json`) or binary mode (`ce-*` headers, `application/json` data).
 * The SDK makes up an id and a time for an event that carries none, and does not validate on
 * receipt: the required attributes are checked on the message itself — deduplication rests on
 * `source` + `id` — and `validate()` is run before the data is checked against its type's schema.
 * 415 for a mode or media type it does not take, 400 naming the first thing wrong otherwise.
 */
export function readCloudEvent(headers: IncomingHttpHeaders, body: Buffer): ReadResult {
  const contentType = (headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  const binary = headers['ce-specversion'] !== undefined;
  const unsupported = (error: string): ReadResult => ({ ok: false, status: 415, error });
  const bad = (error: string): ReadResult => ({ ok: false, status: 400, error });
  if (contentType === BATCH) return unsupported('batched CloudEvents are not taken: send one event per request');
  if (binary && contentType !== 'application/json') return unsupported(`binary-mode data must be application/json, got '${contentType || 'no content type'}'`);
  if (!binary && contentType !== STRUCTURED) {
    return unsupported(`content type '${contentType || 'none'}': send a CloudEvent in structured mode (${STRUCTURED}) or binary mode (ce-* headers, application/json data)`);
  }

  let attributes: Record<string, unknown>;
  if (binary) {
    attributes = Object.fromEntries(REQUIRED.map((a) => [a, headers[`ce-${a}`]]));
  } else {
    let parsed: unknown;
    try {
      parsed = JSON.parse(body.toString('utf8'));
    } catch (err) {
      return bad(`the body is not JSON: ${(err as Error).message}`);
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return bad('the body is not a JSON object (one CloudEvent)');
    attributes = parsed as Record<string, unknown>;
  }
  for (const a of REQUIRED) {
    const v = attributes[a];
    if (typeof v !== 'string' || v.length === 0) return bad(`CloudEvent attribute '${a}' is ${v === undefined ? 'missing' : 'not a non-empty string'}${binary ? ` (header ce-${a})` : ''}`);
  }
  if (attributes.specversion !== '1.0') return bad(`CloudEvent attribute 'specversion' is '${String(attributes.specversion)}': only 1.0 is taken`);

  let event: CloudEvent<unknown>;
  try {
    const read = HTTP.toEvent<unknown>({ headers, body: body.toString('utf8') });
    if (Array.isArray(read)) return unsupported('batched CloudEvents are not taken: send one event per request');
    event = read as CloudEvent<unknown>;
    event.validate();
  } catch (err) {
    return bad(`not a valid CloudEvent: ${describeSdkError(err)}`);
  }
  if (!isEdgeEventType(event.type)) return bad(`CloudEvent attribute 'type' is '${event.type}': this site takes ${Object.values(EVENT_TYPES).join(', ')}`);
  const data = eventDataSchemas[event.type].safeParse(event.data);
  if (!data.success) {
    const issue = data.error.issues[0]!;
    return bad(`'data${issue.path.map((p) => `.${String(p)}`).join('')}' of ${event.type}: ${issue.message}`);
  }
  // The SDK fills `time` in with the receipt's when the event has none: keep only the event's own.
  const ownTime = binary ? headers['ce-time'] : attributes.time;
  return {
    ok: true,
    event: { type: event.type, source: event.source, id: event.id, ...(typeof ownTime === 'string' ? { time: ownTime } : {}), data: data.data },
  };
}

/** The SDK's ValidationError carries ajv's findings: name the first one's field. */
function describeSdkError(err: unknown): string {
  const e = err as { message?: string; errors?: Array<{ instancePath?: string; message?: string; params?: { missingProperty?: string } } | string> | null };
  const first = e.errors?.[0];
  if (first && typeof first === 'object') {
    const field = first.params?.missingProperty ?? first.instancePath?.replace(/^\//, '') ?? '';
    return `${field ? `'${field}' ` : ''}${first.message ?? ''}`.trim();
  }
  if (typeof first === 'string') return first;
  return (e.message ?? String(err)).split('\n')[0]!;
}
