import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { BLOCK_SIZE } from '../engine/blocks.js';
import { loadHash64 } from '../engine/pipeline/checksum.js';
import { nativePageScan } from '../engine/memory/native-page-scan.js';
import { changedShare } from '../engine/memory/memory-tracker.js';

const native = nativePageScan();

test('the native scanner is built and loads (npm ci builds it)', () => {
  assert.ok(native, 'native/page-scan did not load');
});

test('native and wasm xxHash64 agree, and so do their changed-pages scans', async (t) => {
  if (!native) return t.skip('no native scanner');
  const hash = await loadHash64();
  for (const size of [0, 1, 4096, 10_000]) {
    const data = randomBytes(size);
    assert.equal(native.hash64(data), hash(data), `${size} bytes`);
  }
  const dir = await mkdtemp(join(tmpdir(), 'ehoff-test-pagescan-'));
  try {
    // 3000 pages (not a multiple of the 1024-page read), the last one short: zero-filled alike.
    const pages = 3000;
    const before = randomBytes(pages * BLOCK_SIZE - 100);
    const held = new SharedArrayBuffer(pages * 8);
    const heldView = new BigUint64Array(held);
    for (let i = 0; i < pages; i++) {
      const page = Buffer.alloc(BLOCK_SIZE);
      before.copy(page, 0, i * BLOCK_SIZE, (i + 1) * BLOCK_SIZE);
      heldView[i] = hash(page);
    }
    const after = Buffer.from(before);
    const touched = [0, 1, 1023, 1024, 2047, 2999];
    for (const i of touched) after[i * BLOCK_SIZE + 7]! ^= 0xff;
    await writeFile(join(dir, 'ram'), after);
    const task = { path: join(dir, 'ram'), held, from: 0, to: pages };
    assert.deepEqual([...(await changedShare(task, hash, native))], touched);
    assert.deepEqual([...(await changedShare(task, hash, null))], touched, 'the fallback finds the same');
    assert.deepEqual([...native.changedPages(task.path, heldView, 1000, 2048)], [1023, 1024, 2047], 'a share');
    assert.throws(() => native.changedPages(task.path, heldView, 0, pages + 1), /from <= to <= held.length/);
    // Only listed pages (a dirty log's report), in runs across the 1024-page read, alike in the fallback.
    const among = Uint32Array.from([1, 2, 1022, 1023, 1024, 1025, 2999]);
    const listed = { ...task, from: 1, to: 3000, among };
    assert.deepEqual([...(await changedShare(listed, hash, native))], [1, 1023, 1024, 2999]);
    assert.deepEqual([...(await changedShare(listed, hash, null))], [1, 1023, 1024, 2999], 'the fallback reads the same pages');
    assert.throws(() => native.changedAmong(task.path, heldView, Uint32Array.from([5, 4])), /ascend/);
    assert.throws(() => native.changedAmong(task.path, heldView, Uint32Array.from([pages])), /below held.length/);
    assert.throws(() => native.changedPages(join(dir, 'missing'), heldView, 0, 1), /cannot open .*missing/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
