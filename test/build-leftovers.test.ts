import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildLeftoversIn, processRuns, sweepDeadBuilds } from '../infra/base-image/build-leftovers.js';

test('build leftovers are recognised by name: staging folders, RAM files, sockets; nothing else', () => {
  const folders = { buildDir: '/b', shmDir: '/s', tmpDir: '/t' };
  const found = buildLeftoversIn('ehoff', folders, {
    build: ['.staging-41', 'base-abc', 'recipes', '.staging-x'],
    shm: ['ehoff-build-42.ram', 'ehoff-vm-42.ram', 'other-build-42.ram', 'ehoff-bench-44-qemu-tuned-src.ram', 'ehoff-bench-44-A-vm.ram'],
    tmp: ['ehoff-build-43-qmp.sock', 'ehoff-build-43-serial.sock', 'ehoff-build-43.txt', 'ehoff-ci-clone', 'ehoff-bench-45', 'ehoff-bench-45-A'],
  });
  assert.deepEqual(found, [
    { pid: 41, path: '/b/.staging-41' },
    { pid: 42, path: '/s/ehoff-build-42.ram' },
    { pid: 43, path: '/t/ehoff-build-43-qmp.sock' },
    { pid: 43, path: '/t/ehoff-build-43-serial.sock' },
    { pid: 44, path: '/s/ehoff-bench-44-qemu-tuned-src.ram' },
    { pid: 45, path: '/t/ehoff-bench-45' },
  ]);
});

test('the sweep removes a dead build\'s files and keeps a running one\'s', async () => {
  const root = await mkdtemp(join(tmpdir(), 'ehoff-test-leftovers-'));
  try {
    const folders = { buildDir: join(root, 'build'), shmDir: join(root, 'shm'), tmpDir: join(root, 'tmp') };
    for (const d of Object.values(folders)) await mkdir(d);
    // A PID that ran and ended: a real process, waited for.
    const dead = spawnSync('true').pid!;
    assert.equal(processRuns(dead), false);
    const live = process.ppid;
    assert.equal(processRuns(live), true);
    for (const pid of [dead, live]) {
      await mkdir(join(folders.buildDir, `.staging-${pid}`));
      await writeFile(join(folders.buildDir, `.staging-${pid}`, 'disk.img'), 'x');
      await writeFile(join(folders.shmDir, `ehoff-build-${pid}.ram`), 'x');
      await writeFile(join(folders.tmpDir, `ehoff-build-${pid}-qmp.sock`), 'x');
    }
    await mkdir(join(folders.buildDir, 'base-0123'));
    const removed = await sweepDeadBuilds('ehoff', folders);
    assert.equal(removed.length, 3);
    assert.deepEqual(await readdir(folders.buildDir).then((l) => l.sort()), [`.staging-${live}`, 'base-0123'].sort());
    assert.deepEqual(await readdir(folders.shmDir), [`ehoff-build-${live}.ram`]);
    assert.deepEqual(await readdir(folders.tmpDir), [`ehoff-build-${live}-qmp.sock`]);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});
