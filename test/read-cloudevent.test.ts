import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readCloudEvent } from '../events/read-cloudevent.js';

const binaryHeaders = (over: Record<string, string | undefined> = {}) =>
  Object.fromEntries(
    Object.entries({ 'content-type': 'application/json', 'ce-specversion': '1.0', 'ce-id': 'e-1', 'ce-source': '/app/maps', 'ce-type': 'edge.user.moved', ...over }).filter(([, v]) => v !== undefined),
  ) as Record<string, string>;
const structured = (event: Record<string, unknown>) => ({ headers: { 'content-type': 'application/cloudevents+json; charset=utf-8' }, body: Buffer.from(JSON.stringify(event)) });
const moved = { specversion: '1.0', id: 'e-2', source: '/app/maps', type: 'edge.user.moved', data: { vmId: 'vm1', near: { lat: 52.4, lon: 13.1 } } };

function refused(r: ReturnType<typeof readCloudEvent>, status: number, mentions: RegExp): void {
  assert.equal(r.ok, false, 'the event should have been refused');
  if (r.ok) return;
  assert.equal(r.status, status, r.error);
  assert.match(r.error, mentions);
}

test('binary mode: ce-* headers and JSON data become the event, data checked by its type', () => {
  const r = readCloudEvent(binaryHeaders(), Buffer.from('{"vmId":"vm1","toCloudlet":"B"}'));
  assert.ok(r.ok);
  assert.deepEqual(r.event, { type: 'edge.user.moved', source: '/app/maps', id: 'e-1', data: { vmId: 'vm1', toCloudlet: 'B' } });
});

test('structured mode: one JSON document; the event keeps its own time and no made-up one', () => {
  const r = readCloudEvent(structured(moved).headers, structured(moved).body);
  assert.ok(r.ok);
  assert.equal(r.event.id, 'e-2');
  assert.equal(r.event.time, undefined, 'the SDK fills a time in; the event had none');
  const timed = readCloudEvent(structured({ ...moved, time: '2026-12-03T06:00:00Z' }).headers, structured({ ...moved, time: '2026-12-03T06:00:00Z' }).body);
  assert.ok(timed.ok);
  assert.equal(timed.event.time, '2026-12-03T06:00:00Z');
});

test('an event without an id is refused, not given one (dedupe rests on source + id)', () => {
  const { id: _id, ...noId } = moved;
  refused(readCloudEvent(structured(noId).headers, structured(noId).body), 400, /'id' is missing/);
  refused(readCloudEvent(binaryHeaders({ 'ce-id': undefined }), Buffer.from('{"vmId":"vm1"}')), 400, /'id' is missing \(header ce-id\)/);
  refused(readCloudEvent(binaryHeaders({ 'ce-source': undefined }), Buffer.from('{"vmId":"vm1"}')), 400, /'source' is missing/);
});

test('other spec versions, unknown types and malformed data are 400s that name the field', () => {
  refused(readCloudEvent(structured({ ...moved, specversion: '0.3' }).headers, structured({ ...moved, specversion: '0.3' }).body), 400, /specversion.*only 1\.0/);
  refused(readCloudEvent(binaryHeaders({ 'ce-type': 'edge.user.teleported' }), Buffer.from('{}')), 400, /'type' is 'edge\.user\.teleported'.*edge\.user\.moved/);
  refused(readCloudEvent(binaryHeaders(), Buffer.from('{"vmId":"VM 1"}')), 400, /'data\.vmId' of edge\.user\.moved/);
  refused(readCloudEvent(binaryHeaders(), Buffer.from('{"vmId":"vm1","near":{"lat":95,"lon":0}}')), 400, /'data\.near\.lat'/);
  refused(readCloudEvent(binaryHeaders(), Buffer.from('{"vmId":"vm1","toCloudLet":"B"}')), 400, /toCloudLet/);
  refused(readCloudEvent(binaryHeaders({ 'ce-type': 'edge.cloudlet.drain' }), Buffer.from('{"cloudlet":"B","concurrency":0}')), 400, /'data\.concurrency'/);
  refused(readCloudEvent(binaryHeaders(), Buffer.from('{"vmId":')), 400, /not a valid CloudEvent/);
  refused(readCloudEvent({ 'content-type': 'application/cloudevents+json' }, Buffer.from('[1]')), 400, /not a JSON object/);
});

test('modes and media types it does not take are 415s', () => {
  refused(readCloudEvent({ 'content-type': 'application/cloudevents-batch+json' }, Buffer.from('[]')), 415, /batched/);
  refused(readCloudEvent({ 'content-type': 'text/plain' }, Buffer.from('hi')), 415, /structured mode .* or binary mode/);
  refused(readCloudEvent({}, Buffer.from('{}')), 415, /content type 'none'/);
  refused(readCloudEvent(binaryHeaders({ 'content-type': 'text/plain' }), Buffer.from('hello')), 415, /binary-mode data must be application\/json/);
});

test('every event type of the site is read with its data', () => {
  const cases: Array<[string, unknown]> = [
    ['edge.cloudlet.overloaded', { cloudlet: 'A', load: 0.97 }],
    ['edge.cloudlet.drain', { cloudlet: 'B', concurrency: 2 }],
    ['edge.vm.launch', { vmId: 'vm7', workload: { name: 'kvstore', args: ['64', '500', '50'] } }],
  ];
  for (const [type, data] of cases) {
    const r = readCloudEvent(binaryHeaders({ 'ce-type': type }), Buffer.from(JSON.stringify(data)));
    assert.ok(r.ok, `${type}: ${r.ok ? '' : r.error}`);
    assert.deepEqual(r.event.data, data);
  }
});
