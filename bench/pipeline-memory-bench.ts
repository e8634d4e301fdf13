import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Cloudlet } from '../engine/cloudlet/cloudlet.js';
import { SourceHandoffs } from '../engine/handoff/source-handoff.js';
import { fixedControl } from '../engine/handoff/stream-control.js';
import { TargetHandoffs } from '../engine/handoff/target-handoff.js';
import { ensureBaseImage } from '../infra/base-image/build-base-image.js';
import { devCloudletTls } from '../infra/dev-pki.js';
import { tempRoot } from '../test/support/fixtures.js';

/**
 * npm run bench:pipeline-memory [-- --sizes 1024,4096] [-- --json]
 * Peak resident memory of the handoff pipeline (source and target in this one process) while a
 * guest's overlay streams over loopback, for guests of growing size. The stream must not hold
 * images in memory: its peak above the idle process should stay flat as the guest grows.
 */
const { values } = parseArgs({ options: { sizes: { type: 'string', default: '1024,4096' }, json: { type: 'boolean', default: false }, one: { type: 'string' } } });
const log = (l: string) => console.error(l);
const MiB = 1 << 20;
type Row = { guestMiB: number; overlayMB: number; idleRssMiB: number; peakRssMiB: number; streamPeakAboveIdleMiB: number; streamSeconds: number };
const rows: Row[] = [];

if (values.one) {
  await measureOne(Number(values.one));
  console.log(JSON.stringify(rows[0]));
  process.exit(0);
}
// Each size in a fresh process, so no run inherits another's heap.
for (const size of values.sizes.split(',').map(Number)) {
  const { spawnSync } = await import('node:child_process');
  const r = spawnSync(process.execPath, ['--expose-gc', '--import', 'tsx', new URL(import.meta.url).pathname, '--one', String(size)], { stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`measuring the ${size} MiB guest failed (exit ${r.status})`);
  rows.push(JSON.parse(r.stdout.trim().split('\n').at(-1)!) as Row);
}
console.log('guest MiB  overlay MB  idle RSS MiB  peak RSS MiB  peak above idle MiB  stream s');
for (const r of rows) console.log(`${String(r.guestMiB).padStart(9)} ${String(r.overlayMB).padStart(11)} ${String(r.idleRssMiB).padStart(13)} ${String(r.peakRssMiB).padStart(13)} ${String(r.streamPeakAboveIdleMiB).padStart(20)} ${String(r.streamSeconds).padStart(9)}`);
if (values.json) console.log(JSON.stringify({ rows }));

async function measureOne(guestMiB: number): Promise<void> {
  const base = await ensureBaseImage({ memoryMiB: guestMiB, accel: 'tcg', log });
  const root = await tempRoot('mem');
  const make = async (name: string) => new Cloudlet({ name, runDir: join(root.dir, name), imageCacheDir: join(root.dir, `${name}-img`), dataHost: '127.0.0.1', prefix: 'ehoff', tls: await devCloudletTls(name) });
  const A = await make('A');
  const B = await make('B');
  try {
    await Promise.all([A.start(), B.start()]);
    await Promise.all([A.images.install(base.dir), B.images.install(base.dir)]);
    const workloadMiB = Math.floor(guestMiB * 0.6);
    const t0 = Date.now();
    await A.launchVm('mem-vm', base.id, { name: 'kvstore', args: [String(workloadMiB), '4000', '200'] }, { readyTimeoutMs: 900_000 });
    await A.vm('mem-vm').serial.waitFor((t) => t.includes('EHOFF-KVSTORE-LOADED'), 900_000);
    log(`${guestMiB} MiB guest: kvstore ${workloadMiB} MiB loaded in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
    const source = new SourceHandoffs(A);
    const target = new TargetHandoffs(B);
    await source.snapshot('mem', 'mem-vm');
    const endpoint = await target.prepare('mem', 'mem-vm', base.id, 'A');
    await A.dedupIndex(A.vm('mem-vm').base);
    global.gc?.();
    const idle = process.memoryUsage.rss();
    let peak = idle;
    const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage.rss())), 20);
    const started = Date.now();
    const result = await source.stream('mem', endpoint, fixedControl('xor/zstd-3'));
    clearInterval(sampler);
    peak = Math.max(peak, process.memoryUsage.rss());
    await target.finalize('mem', result);
    rows.push({
      guestMiB,
      overlayMB: Math.round(result.stages.inputBytes / 1e6),
      idleRssMiB: Math.round(idle / MiB),
      peakRssMiB: Math.round(peak / MiB),
      streamPeakAboveIdleMiB: Math.round((peak - idle) / MiB),
      streamSeconds: Math.round((Date.now() - started) / 100) / 10,
    });
    log(JSON.stringify(rows.at(-1)));
    await target.abort('mem');
  } finally {
    await Promise.allSettled([A.destroyAll(), B.destroyAll()]);
    await Promise.allSettled([A.stop(), B.stop()]);
    await root.remove();
  }
}
