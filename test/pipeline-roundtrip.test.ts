import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { open, readFile, writeFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { BLOCK_SIZE } from '../engine/blocks.js';
import { HandoffError } from '../engine/errors.js';
import { ALL_MODES, modeId } from '../engine/adaptation/mode.js';
import { applyBatch, type ChunkStore } from '../engine/pipeline/batch-applier.js';
import { CodecPool } from '../engine/pipeline/codec-pool.js';
import { Space } from '../engine/pipeline/chunk-records.js';
import { baseChunkReader, type ChunkReader } from '../engine/pipeline/chunk-source.js';
import { DedupIndex } from '../engine/pipeline/dedup-index.js';
import { SentChunkCache } from '../engine/pipeline/sent-chunk-cache.js';
import { encodeOverlay, type EncodedBatch } from '../engine/pipeline/overlay-encoder.js';
import type { BatchHeader } from '../engine/wire/frames.js';
import { testBaseImage, tempRoot } from './support/fixtures.js';
import fc from 'fast-check';

// Overlay → encode in a mode → apply at a target → byte-identical, for every mode, on random
// overlays and on real guest memory.

let root: Awaited<ReturnType<typeof tempRoot>>;
let pool: CodecPool;
const opened: FileHandle[] = [];

before(async () => {
  root = await tempRoot('pipe');
  pool = new CodecPool(2);
});
after(async () => {
  await Promise.allSettled(opened.map((f) => f.close()));
  await pool.close();
  await root.remove();
});

/** An in-memory target: base + overlay, for memory and disk. */
function memoryStore(memory: Buffer, disk: Buffer): ChunkStore & { memory: Buffer; disk: Buffer } {
  const img = (s: Space) => (s === Space.Memory ? memory : disk);
  return {
    memory,
    disk,
    limit: (s) => img(s).length / BLOCK_SIZE,
    writeRun: async (s, first, chunks) => chunks.forEach((data, k) => data.copy(img(s), (first + k) * BLOCK_SIZE)),
    read: async (s, indices, into) => indices.forEach((i, n) => img(s).copy(into, n * BLOCK_SIZE, i * BLOCK_SIZE, (i + 1) * BLOCK_SIZE)),
  };
}

function bufferReader(memory: Buffer, disk: Buffer): ChunkReader {
  return memoryStore(memory, disk);
}

function header(b: EncodedBatch): BatchHeader {
  return { seq: b.seq, mode: b.modeId, chunks: b.stages.chunks, rawBytes: b.rawBytes, rawXxh64: b.rawXxh64, payloadBytes: b.payload.length, payloadXxh64: b.payloadXxh64 };
}

async function fileReader(baseMemory: Buffer, baseDisk: Buffer): Promise<ChunkReader> {
  const m = join(root.dir, `m-${Math.random()}`);
  const d = join(root.dir, `d-${Math.random()}`);
  await writeFile(m, baseMemory);
  await writeFile(d, baseDisk);
  const [fm, fd] = await Promise.all([open(m, 'r'), open(d, 'r')]);
  opened.push(fm, fd);
  return baseChunkReader(fm, baseMemory.length, fd, baseDisk.length);
}

/** Every chunk that differs between base and source, per space. */
function changed(base: Buffer, now: Buffer): number[] {
  const out: number[] = [];
  for (let i = 0; i < now.length / BLOCK_SIZE; i++) {
    if (!now.subarray(i * BLOCK_SIZE, (i + 1) * BLOCK_SIZE).equals(base.subarray(i * BLOCK_SIZE, (i + 1) * BLOCK_SIZE))) out.push(i);
  }
  return out;
}

async function roundTrip(baseMemory: Buffer, baseDisk: Buffer, memory: Buffer, disk: Buffer, mode: string) {
  const base = await fileReader(baseMemory, baseDisk);
  const dedup = await DedupIndex.build(base, baseMemory.length / BLOCK_SIZE, Array.from({ length: baseDisk.length / BLOCK_SIZE }, (_, i) => i));
  const target = memoryStore(Buffer.from(baseMemory), Buffer.from(baseDisk));
  const stages = { zero: 0, baseRefs: 0, selfRefs: 0, data: 0, payload: 0, input: 0 };
  for await (const b of encodeOverlay(
    [
      { space: Space.Memory, indices: changed(baseMemory, memory) },
      { space: Space.Disk, indices: changed(baseDisk, disk) },
    ],
    { pool, dedup, source: bufferReader(memory, disk), base, currentMode: () => mode },
  )) {
    await applyBatch(header(b), Buffer.from(b.payload), target, base);
    stages.zero += b.stages.zero;
    stages.baseRefs += b.stages.baseRefs;
    stages.selfRefs += b.stages.selfRefs;
    stages.data += b.stages.data;
    stages.payload += b.payload.length;
    stages.input += b.inputBytes;
  }
  assert.ok(target.memory.equals(memory), `${mode}: memory byte-identical`);
  assert.ok(target.disk.equals(disk), `${mode}: disk byte-identical`);
  return stages;
}

/** A source that exercises every record kind: zeros, base dups, self dups, small edits, noise. */
function randomOverlay(baseMemory: Buffer, baseDisk: Buffer) {
  const memory = Buffer.from(baseMemory);
  const disk = Buffer.from(baseDisk);
  const pages = memory.length / BLOCK_SIZE;
  const page = (b: Buffer, i: number) => b.subarray(i * BLOCK_SIZE, (i + 1) * BLOCK_SIZE);
  for (let i = 0; i < pages; i++) {
    switch (i % 7) {
      case 0: page(memory, i).fill(0); break; // zeroed
      case 1: page(baseDisk, (i * 3) % (baseDisk.length / BLOCK_SIZE)).copy(page(memory, i)); break; // = a base disk block
      case 2: randomBytes(16).copy(page(memory, i), (i * 13) % 4000); break; // small edit: delta wins
      case 3: page(memory, 2).copy(page(memory, i)); break; // = an earlier overlay page
      case 4: randomBytes(BLOCK_SIZE).copy(page(memory, i)); break; // noise
      default: break; // unchanged
    }
  }
  for (let i = 0; i < disk.length / BLOCK_SIZE; i += 3) Buffer.from(`disk record ${i} `.repeat(300)).copy(page(disk, i));
  return { memory, disk };
}

test('random overlays round-trip byte-identical through every mode', async () => {
  const text = Buffer.from('edge cloudlet handoff base image text '.repeat(60000));
  const baseMemory = Buffer.alloc(512 * BLOCK_SIZE);
  text.copy(baseMemory);
  const baseDisk = Buffer.alloc(256 * BLOCK_SIZE);
  randomBytes(64 * BLOCK_SIZE).copy(baseDisk);
  const { memory, disk } = randomOverlay(baseMemory, baseDisk);
  for (const mode of ALL_MODES.map(modeId)) {
    const s = await roundTrip(baseMemory, baseDisk, memory, disk, mode);
    assert.ok(s.zero > 0 && s.baseRefs > 0 && s.selfRefs > 0 && s.data > 0, `${mode}: every record kind used (${JSON.stringify(s)})`);
  }
});

test('real guest memory round-trips byte-identical through every mode', async () => {
  const base = await testBaseImage();
  const ram = (await readFile(join(base.dir, 'memory.img'))).subarray(0, 12 << 20);
  // The real RAM as the VM now; as its base, the same RAM with a third of the pages moved or zeroed.
  const baseMemory = Buffer.from(ram);
  for (let i = 0; i < baseMemory.length / BLOCK_SIZE; i += 3) baseMemory.fill(0, i * BLOCK_SIZE, (i + 1) * BLOCK_SIZE);
  for (let i = 1; i < baseMemory.length / BLOCK_SIZE - 1; i += 9) ram.copy(baseMemory, (i + 1) * BLOCK_SIZE, i * BLOCK_SIZE, (i + 1) * BLOCK_SIZE);
  const baseDisk = Buffer.alloc(16 * BLOCK_SIZE);
  const disk = Buffer.from(baseDisk);
  ram.copy(disk, 0, 0, disk.length);
  for (const mode of ALL_MODES.map(modeId)) await roundTrip(baseMemory, baseDisk, Buffer.from(ram), disk, mode);
});

test('a corrupted batch is refused before anything is written', async () => {
  const baseMemory = Buffer.alloc(64 * BLOCK_SIZE);
  const baseDisk = Buffer.alloc(16 * BLOCK_SIZE);
  const memory = Buffer.from(baseMemory);
  randomBytes(8 * BLOCK_SIZE).copy(memory);
  const base = await fileReader(baseMemory, baseDisk);
  const dedup = await DedupIndex.build(base, 64, []);
  const batches: EncodedBatch[] = [];
  for await (const b of encodeOverlay([{ space: Space.Memory, indices: changed(baseMemory, memory) }], {
    pool, dedup, source: bufferReader(memory, baseDisk), base, currentMode: () => 'none/zstd-1',
  })) batches.push(b);
  const b = batches[0]!;
  const target = memoryStore(Buffer.from(baseMemory), Buffer.from(baseDisk));
  const flipped = Buffer.from(b.payload);
  flipped[flipped.length >> 1]! ^= 0x40;
  await assert.rejects(applyBatch(header(b), flipped, target, base), (err: unknown) => {
    assert.ok(err instanceof HandoffError && err.code === 'STATE_MISMATCH');
    assert.match(err.message, /payload checksum does not match/);
    return true;
  });
  assert.ok(target.memory.equals(baseMemory), 'nothing was applied');
  await assert.rejects(applyBatch({ ...header(b), chunks: b.stages.chunks + 1 }, Buffer.from(b.payload), target, base), /header says/);
});

test('property: any overlay over any base round-trips byte-identical', async () => {
  // Chunks drawn from a small alphabet of contents, so zeros, base duplicates, repeats within
  // the overlay, near-copies of the base and fresh bytes all turn up in the generated cases.
  const alphabet = [Buffer.alloc(BLOCK_SIZE), ...Array.from({ length: 5 }, () => randomBytes(BLOCK_SIZE))];
  const near = (b: Buffer, at: number) => {
    const c = Buffer.from(b);
    c.writeUInt32LE(at, (at * 8) % (BLOCK_SIZE - 4));
    return c;
  };
  const chunkGen = fc.oneof(
    fc.integer({ min: 0, max: alphabet.length - 1 }).map((i) => alphabet[i]!),
    fc.integer({ min: 0, max: 1000 }).map((i) => near(alphabet[1 + (i % 5)]!, i)),
    fc.uint8Array({ minLength: BLOCK_SIZE, maxLength: BLOCK_SIZE }).map((a) => Buffer.from(a)),
  );
  const image = (n: number) => fc.array(chunkGen, { minLength: n, maxLength: n }).map((cs) => Buffer.concat(cs));
  const modes = ['none/none', 'xor/gzip-1', 'fossil/zstd-1', 'none/xz-1'];
  await fc.assert(
    fc.asyncProperty(image(24), image(8), image(24), image(8), fc.constantFrom(...modes), async (bm, bd, m, d, mode) => {
      await roundTrip(bm, bd, m, d, mode);
    }),
    { numRuns: 25 },
  );
});

/** Sends one epoch: the chunks that differ between `was` and `now` (memory only), applied at `target`. */
async function sendEpoch(was: Buffer, now: Buffer, target: ChunkStore, base: ChunkReader, dedup: DedupIndex, previous: SentChunkCache, mode: string) {
  const counts = { data: 0, againstPrevious: 0, payload: 0 };
  const emptyDisk = Buffer.alloc(0);
  for await (const b of encodeOverlay([{ space: Space.Memory, indices: changed(was, now) }], {
    pool, dedup: dedup.forOverlay({ selfRefs: false }), source: bufferReader(now, emptyDisk), base, currentMode: () => mode, previous,
  })) {
    await applyBatch(header(b), Buffer.from(b.payload), target, base);
    counts.data += b.stages.data;
    counts.againstPrevious += b.stages.againstPrevious;
    counts.payload += b.payload.length;
  }
  return counts;
}

test('chunks sent again go as XORs with their previous send, far smaller, and the target rebuilds them', async () => {
  const pages = 256;
  const baseMemory = Buffer.alloc(pages * BLOCK_SIZE);
  const base = await fileReader(baseMemory, Buffer.alloc(BLOCK_SIZE));
  const dedup = await DedupIndex.build(base, pages, []);
  // Epoch 0: records of random bytes (incompressible); epoch 1: one 8-byte field updated in
  // each, as a key-value store does in place.
  const first = Buffer.from(baseMemory);
  randomBytes(pages * BLOCK_SIZE).copy(first);
  const second = Buffer.from(first);
  for (let i = 0; i < pages; i++) randomBytes(8).copy(second, i * BLOCK_SIZE + ((i * 40) % (BLOCK_SIZE - 8)));
  for (const mode of ['none/zstd-1', 'fossil/xz-1']) {
    const target = memoryStore(Buffer.from(baseMemory), Buffer.alloc(BLOCK_SIZE));
    const previous = new SentChunkCache(1024);
    const e0 = await sendEpoch(baseMemory, first, target, base, dedup, previous, mode);
    assert.equal(e0.againstPrevious, 0, `${mode}: nothing was sent before epoch 0`);
    const e1 = await sendEpoch(first, second, target, base, dedup, previous, mode);
    assert.ok(target.memory.equals(second), `${mode}: the target holds the guest's memory after epoch 1`);
    assert.equal(e1.againstPrevious, pages, `${mode}: every page of epoch 1 went as an XOR with its previous send`);
    assert.ok(e1.payload * 20 < e0.payload, `${mode}: epoch 1 is a small fraction of epoch 0 (${e1.payload} vs ${e0.payload} bytes)`);
    // Without the cache the same epoch costs about what epoch 0 did.
    const cold = memoryStore(Buffer.from(first), Buffer.alloc(BLOCK_SIZE));
    const without = await sendEpoch(first, second, cold, base, dedup, new SentChunkCache(0), mode);
    assert.ok(cold.memory.equals(second) && without.againstPrevious === 0 && without.payload > e0.payload / 2, `${mode}: no cache, no XOR (${without.payload} bytes)`);
  }
});

test('property: epochs over a small cache (evicting, zeroed and base-equal pages between) keep the target exact', async () => {
  const pages = 16;
  const alphabet = [Buffer.alloc(BLOCK_SIZE), ...Array.from({ length: 3 }, () => randomBytes(BLOCK_SIZE))];
  const baseMemory = Buffer.concat([alphabet[1]!, alphabet[2]!, ...Array.from({ length: pages - 2 }, () => Buffer.alloc(BLOCK_SIZE))]);
  const base = await fileReader(baseMemory, Buffer.alloc(BLOCK_SIZE));
  const dedup = await DedupIndex.build(base, pages, []);
  // Each epoch rewrites some pages: a field edit (XOR-friendly), zeros, a base page, fresh bytes.
  const edit = fc.record({
    page: fc.integer({ min: 0, max: pages - 1 }),
    how: fc.constantFrom('field', 'zero', 'base', 'fresh'),
    at: fc.integer({ min: 0, max: BLOCK_SIZE - 8 }),
  });
  await fc.assert(
    fc.asyncProperty(fc.array(fc.array(edit, { maxLength: 10 }), { minLength: 1, maxLength: 5 }), fc.integer({ min: 0, max: 6 }), fc.constantFrom('none/zstd-1', 'xor/gzip-1', 'fossil/none'), async (epochs, capacity, mode) => {
      const target = memoryStore(Buffer.from(baseMemory), Buffer.alloc(BLOCK_SIZE));
      const previous = new SentChunkCache(capacity);
      let was = Buffer.from(baseMemory);
      for (const edits of epochs) {
        const now = Buffer.from(was);
        for (const e of edits) {
          const page = now.subarray(e.page * BLOCK_SIZE, (e.page + 1) * BLOCK_SIZE);
          if (e.how === 'field') randomBytes(8).copy(page, e.at);
          else if (e.how === 'zero') page.fill(0);
          else if (e.how === 'base') alphabet[1 + (e.at % 2)]!.copy(page);
          else randomBytes(BLOCK_SIZE).copy(page);
        }
        await sendEpoch(was, now, target, base, dedup, previous, mode);
        assert.ok(target.memory.equals(now), 'the target holds what the source does after every epoch');
        assert.ok(previous.size <= capacity);
        was = now;
      }
    }),
    { numRuns: 60 },
  );
});
