import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { BLOCK_SIZE } from '../engine/blocks.js';
import { CODECS, LEVELS } from '../engine/adaptation/mode.js';
import { compress as zstdCompress } from 'zstd-napi';
import { ZSTD_SEARCH, compressBatch, decompressBatch } from '../engine/pipeline/codecs.js';
import { RecordKind, Space, encodeRecords, parseRecords, undelta, type ChunkRecord } from '../engine/pipeline/chunk-records.js';
import type { ChunkReader } from '../engine/pipeline/chunk-source.js';
import { DedupIndex } from '../engine/pipeline/dedup-index.js';
import { SentChunkCache } from '../engine/pipeline/sent-chunk-cache.js';
import { Throttle } from '../engine/wire/throttle.js';

const page = (fill: number) => Buffer.alloc(BLOCK_SIZE, fill);

function reader(memory: Buffer[], disk: Buffer[] = []): ChunkReader {
  return {
    async read(space, indices, into) {
      const src = space === Space.Memory ? memory : disk;
      indices.forEach((i, n) => (src[i] ?? Buffer.alloc(BLOCK_SIZE)).copy(into, n * BLOCK_SIZE));
    },
  };
}

test('a hash match is only a candidate: dedup confirms bytes before it references', async () => {
  // Every chunk collides on the same hash, so only byte comparison can tell them apart.
  const collide = () => 1n;
  const base = reader([page(1), page(2)]);
  const index = (await DedupIndex.build(base, 2, [], collide)).forOverlay();
  const vm = reader([page(1), page(3), page(3)]);
  const same = await index.classify({ space: Space.Memory, index: 0 }, page(1), page(0), vm, base);
  assert.equal(same.kind, 'base-ref', 'equal bytes become a reference');
  const other = await index.classify({ space: Space.Memory, index: 1 }, page(3), page(2), vm, base);
  assert.equal(other.kind, 'data', 'a colliding but different chunk is sent as data');
  const again = await index.classify({ space: Space.Memory, index: 2 }, page(3), page(0), vm, base);
  assert.deepEqual(again.kind === 'self-ref' && [again.refSpace, again.refIndex], [Space.Memory, 1], 'a repeat within the overlay refers back');
  assert.equal((await index.classify({ space: Space.Disk, index: 9 }, page(0), page(5), vm, base)).kind, 'zero');
});

test('records round-trip for every kind and delta', () => {
  const base = randomBytes(BLOCK_SIZE);
  const near = Buffer.from(base);
  near.write('changed bytes', 100);
  const records: ChunkRecord[] = [
    { kind: 'zero', space: Space.Memory, index: 1 },
    { kind: 'data', space: Space.Disk, index: 2 ** 21, data: near, base },
    { kind: 'base-ref', space: Space.Memory, index: 3, refSpace: Space.Disk, refIndex: 77 },
    { kind: 'self-ref', space: Space.Disk, index: 4, refSpace: Space.Memory, refIndex: 3 },
  ];
  for (const delta of ['none', 'xor', 'fossil'] as const) {
    const parsed = parseRecords(Buffer.from(encodeRecords(records, delta)));
    assert.equal(parsed.length, 4);
    const d = parsed[1]!;
    assert.ok(d.kind === RecordKind.Raw || d.kind === RecordKind.Xor || d.kind === RecordKind.Fossil);
    assert.deepEqual(undelta(d.kind, d.body, base), near, `${delta} restores the chunk`);
    if (delta === 'fossil') assert.ok(d.body.length < 200, `a small edit is a small delta (${d.body.length} bytes)`);
    assert.deepEqual(parsed[2], { kind: RecordKind.BaseRef, space: Space.Memory, index: 3, refSpace: Space.Disk, refIndex: 77 });
  }
  // Relative to the previous send: an XOR whatever the mode's delta.
  const previous = randomBytes(BLOCK_SIZE);
  const again = Buffer.from(previous);
  again.writeUInt32LE(7, 12);
  for (const delta of ['none', 'xor', 'fossil'] as const) {
    const r = parseRecords(Buffer.from(encodeRecords([{ kind: 'data', space: Space.Memory, index: 5, data: again, base: previous, against: 'previous' }], delta)))[0]!;
    assert.ok(r.kind === RecordKind.XorPrevious, `${delta}: an xor-prev record`);
    assert.equal(r.body.filter((b) => b !== 0).length <= 4, true, 'mostly zeros where little changed');
    assert.deepEqual(undelta(r.kind, r.body, previous), again);
  }
  assert.throws(() => parseRecords(Buffer.from([9, 0, 0, 0, 0, 0])), /unknown kind 9/);
  assert.throws(() => parseRecords(Buffer.from([1, 0, 0, 0, 0, 0, 1, 2])), /truncated inside a chunk/);
});

test('every codec and level round-trips and rejects a wrong size', async () => {
  const raw = Buffer.from('key:00000042 v3 name=edge-cloudlet city=Oslo score=123 note=frame drone beacon\n'.repeat(20000));
  for (const codec of CODECS) {
    for (const level of LEVELS[codec]) {
      const packed = await compressBatch(codec, level, raw);
      if (codec !== 'none') assert.ok(packed.length < raw.length / 5, `${codec}-${level} compresses text`);
      assert.deepEqual(await decompressBatch(codec, packed, raw.length), raw);
    }
    await assert.rejects(decompressBatch(codec, await compressBatch(codec, LEVELS[codec][0]!, raw), raw.length + 1), /decompressed to/);
  }
});

test('the bandwidth cap holds a stream to its rate', async () => {
  const chunks = Array.from({ length: 20 }, () => Buffer.alloc(50_000));
  const started = Date.now();
  await pipeline(Readable.from(chunks), new Throttle(() => 8), new Writable({ write: (_c, _e, cb) => cb() }));
  const seconds = (Date.now() - started) / 1000;
  // 1 MB at 8 Mbit/s takes 1 s; allow for timer slack on either side.
  assert.ok(seconds > 0.8 && seconds < 3, `took ${seconds} s`);
});

test('the sent-chunk cache forgets the least recently sent first, and what it is told to', () => {
  const cache = new SentChunkCache(2);
  cache.put(Space.Memory, 1, page(1));
  cache.put(Space.Disk, 1, page(2));
  assert.deepEqual(cache.get(Space.Memory, 1), page(1), 'memory and disk chunks are kept apart');
  cache.put(Space.Memory, 1, page(3)); // sent again: now the most recent
  cache.put(Space.Memory, 9, page(9)); // evicts disk 1, the least recently sent
  assert.equal(cache.get(Space.Disk, 1), undefined);
  assert.deepEqual(cache.get(Space.Memory, 1), page(3), 'holds the latest send');
  cache.forget(Space.Memory, 1);
  assert.equal(cache.get(Space.Memory, 1), undefined);
  cache.put(Space.Memory, 4, page(4)); // into the forgotten slot: nothing evicted
  assert.deepEqual([cache.size, cache.get(Space.Memory, 9)?.[0], cache.get(Space.Memory, 4)?.[0]], [2, 9, 4]);
  const off = new SentChunkCache(0);
  off.put(Space.Memory, 1, page(1));
  assert.equal(off.get(Space.Memory, 1), undefined, 'capacity 0 keeps nothing');
  assert.throws(() => new SentChunkCache(-1), /capacity must be a whole number/);
});

test('zstd: a full batch comes out byte for byte as libzstd\'s own choice at every level; a sample gets the same search', async () => {
  // Text-like records from a small vocabulary (kvstore's kind), deterministic.
  const words = ['edge', 'cloudlet', 'drone', 'beacon', 'Oslo', 'Lima', 'frame', 'tower', 'amber', 'jade', 'queue', 'radio'];
  let x = 2463534242;
  const next = () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return x >>> 0;
  };
  const lines: string[] = [];
  for (let i = 0; lines.join('').length < 1 << 20; i++) lines.push(`key:${String(i).padStart(8, '0')} name=${words[next() % 12]}-${words[next() % 12]} score=${next() % 100000} note=${words[next() % 12]} ${words[next() % 12]}\n`);
  const batch = Buffer.from(lines.join('')).subarray(0, 1 << 20);
  for (const level of LEVELS.zstd) {
    assert.ok(ZSTD_SEARCH[level], `zstd-${level} has its search set`);
    assert.deepEqual(await compressBatch('zstd', level, batch), zstdCompress(batch, { compressionLevel: level }), `zstd-${level} on 1 MiB`);
  }
  // 64 chunks: zstd alone would pick btopt for 15 and btultra for 16 here; ours keep the batch's.
  const sample = batch.subarray(0, 64 * BLOCK_SIZE);
  for (const level of [15, 16]) {
    const ours = await compressBatch('zstd', level, sample);
    assert.notDeepEqual(ours, zstdCompress(sample, { compressionLevel: level }), `zstd-${level} on a sample differs from zstd's small-input choice`);
    assert.deepEqual(await decompressBatch('zstd', ours, sample.length), sample);
  }
});
