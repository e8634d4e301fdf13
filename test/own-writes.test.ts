import { test } from 'node:test';
import assert from 'node:assert/strict';
import { open, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { OwnWrites } from '../engine/handoff/own-writes.js';

// The target's RAM file is written by its session only; a write by anything else between two of
// its own (a stray process, a bad page) must be noticed, so the stop-time check reads it all again.

test('writes through the owner are its own; a write by anything else in between is noticed', async () => {
  const path = join('/dev/shm', `ehoff-own-writes-${process.pid}`);
  try {
    await writeFile(path, Buffer.alloc(8192));
    const file = await open(path, 'r+');
    const writes = await OwnWrites.watch(file);
    for (let i = 0; i < 20; i++) await writes.write(() => file.write(Buffer.from([i]), 0, 1, i));
    assert.equal(writes.foreign, false, 'twenty writes of its own, none foreign');
    const other = await open(path, 'r+');
    await other.write(Buffer.from([0xff]), 0, 1, 4096);
    await other.close();
    assert.equal(writes.foreign, false, 'not seen until the owner writes again');
    await writes.write(() => file.write(Buffer.from([1]), 0, 1, 0));
    assert.equal(writes.foreign, true, 'the foreign write is seen at the next own write');
    await file.close();
  } finally {
    await rm(path, { force: true });
  }
});
