import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DataPlaneServer } from '../engine/wire/data-plane-server.js';
import { FrameType, type Frame } from '../engine/wire/frames.js';
import type { CloudletTls } from '../engine/wire/cloudlet-tls.js';
import { ImageCache } from '../engine/image/image-cache.js';
import { fetchBaseImage, serveBasePart } from '../engine/image/base-transfer.js';
import { FILE_NAMES, MANIFEST_FILE } from '../engine/image/base-image.js';
import { devCloudletTls } from '../infra/dev-pki.js';
import { BASE_IMAGE_BUILD_DIR } from '../infra/paths.js';
import { tempRoot, testBaseImage } from './support/fixtures.js';

/**
 * A base image travels from A's cache to B's over A's real data plane (mutual TLS on loopback):
 * whole, after a cut mid-way (resumed, not restarted), and never from a part that is not what the
 * manifest names.
 */
let A: CloudletTls;
let B: CloudletTls;
let root: Awaited<ReturnType<typeof tempRoot>>;
let baseId: string;
let sourceCache: ImageCache;

before(async () => {
  root = await tempRoot('base-fetch');
  [A, B] = await Promise.all([devCloudletTls('A'), devCloudletTls('B')]);
  baseId = (await testBaseImage()).id;
  // The folder of built images is laid out as a cache (<id>/manifest.json): A serves from it as it is.
  sourceCache = new ImageCache(BASE_IMAGE_BUILD_DIR);
});
after(async () => root?.remove());

/** A's data plane, serving its cache; `cutAfterChunks`: the connection dies after that many chunk frames (once). */
async function serveFrom(cache: ImageCache, cutAfterChunks?: number): Promise<{ server: DataPlaneServer; port: number }> {
  const server = new DataPlaneServer('127.0.0.1', A);
  let sent = 0;
  let cut = cutAfterChunks === undefined;
  server.serveBaseImages((request, send) =>
    serveBasePart(cache, request, async (f: Frame) => {
      if (!cut && f.type === FrameType.BaseChunk && ++sent > cutAfterChunks!) {
        cut = true;
        throw new Error('cut by the test');
      }
      await send(f);
    }),
  );
  const { port } = await server.start();
  return { server, port };
}

test('a base image travels whole: every part verified, installed in the fetching cache, holes not sent', async () => {
  const { server, port } = await serveFrom(sourceCache);
  try {
    const cache = new ImageCache(join(root.dir, 'B-whole'));
    const report = await fetchBaseImage({ cache, baseImageId: baseId, peer: { host: '127.0.0.1', port, cloudlet: 'A' }, tls: B });
    assert.equal(report.alreadyHeld, false);
    assert.ok(await cache.has(baseId));
    const fetched = await cache.get(baseId);
    const original = await sourceCache.get(baseId);
    assert.deepEqual(fetched.manifest, original.manifest);
    for (const part of ['kernel', 'deviceState', 'memory'] as const) {
      assert.ok((await readFile(fetched.path(part))).equals(await readFile(original.path(part))), `${part} arrived as it is at A`);
    }
    // The disk is an 8 GiB sparse file: only what it holds crossed, compressed.
    const diskBytes = (await stat(original.path('disk'))).size;
    assert.ok(report.wireBytes < diskBytes / 20, `${report.wireBytes} bytes on the wire for a ${diskBytes}-byte disk and the rest`);
    assert.deepEqual(await readdir(cache.dir), [baseId], 'no fetch folder is left behind');
    const again = await fetchBaseImage({ cache, baseImageId: baseId, peer: { host: '127.0.0.1', port, cloudlet: 'A' }, tls: B });
    assert.equal(again.alreadyHeld, true);
  } finally {
    await server.stop();
  }
});

test('a fetch cut off mid-part resumes from what arrived, and completes', async () => {
  // 40 chunks of up to 1 MiB: well into the memory image, past a progress save (8 MiB).
  const cutting = await serveFrom(sourceCache, 40);
  const cache = new ImageCache(join(root.dir, 'B-resume'));
  const peer = { host: '127.0.0.1', port: cutting.port, cloudlet: 'A' };
  try {
    await assert.rejects(fetchBaseImage({ cache, baseImageId: baseId, peer, tls: B }), /closed the base transfer|failed|cut/);
    assert.equal(await cache.has(baseId), false);
    const report = await fetchBaseImage({ cache, baseImageId: baseId, peer, tls: B });
    assert.ok(report.resumed.some((r) => /^manifest$/.test(r)), `resumed: ${report.resumed.join(', ')}`);
    assert.ok(report.resumed.some((r) => / from byte [1-9]/.test(r)), `a part resumed from where it was cut: ${report.resumed.join(', ')}`);
    assert.ok(await cache.has(baseId));
  } finally {
    await cutting.server.stop();
  }
});

test('a part that is not what the manifest names is refused, and nothing enters the cache', async () => {
  // A cache laid out by hand with copies (never the hard-linked originals: root writes through
  // a read-only link) whose device state differs from what its manifest names.
  const tampered = new ImageCache(join(root.dir, 'A-tampered'));
  const original = await sourceCache.get(baseId);
  const dir = join(tampered.dir, baseId);
  await mkdir(dir, { recursive: true });
  // The fetch takes kernel, initrd, then the device state, and stops there: nothing after it is needed.
  for (const name of [FILE_NAMES.kernel, FILE_NAMES.initrd, FILE_NAMES.deviceState, MANIFEST_FILE]) await copyFile(join(original.dir, name), join(dir, name));
  const bytes = await readFile(join(dir, FILE_NAMES.deviceState));
  bytes[100] = bytes[100]! ^ 0xff;
  await writeFile(join(dir, FILE_NAMES.deviceState), bytes);
  const { server, port } = await serveFrom(tampered);
  try {
    const cache = new ImageCache(join(root.dir, 'B-tampered'));
    await assert.rejects(fetchBaseImage({ cache, baseImageId: baseId, peer: { host: '127.0.0.1', port, cloudlet: 'A' }, tls: B }), /part deviceState .* does not match its manifest/);
    assert.equal(await cache.has(baseId), false);
    const left = await readdir(join(cache.dir, `.fetch-${baseId}`));
    assert.ok(!left.includes(FILE_NAMES.deviceState) && !left.includes(`${FILE_NAMES.deviceState}.partial`), `nothing of the bad part kept: ${left.join(', ')}`);
  } finally {
    await server.stop();
  }
});
