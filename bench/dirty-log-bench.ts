import { mkdir, open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { BLOCK_SIZE } from '../engine/blocks.js';
import { Cloudlet } from '../engine/cloudlet/cloudlet.js';
import { describeTracking } from '../engine/contract.js';
import { armDirtyLog } from '../engine/memory/dirty-log.js';
import { MemoryTracker } from '../engine/memory/memory-tracker.js';
import { loadHash64 } from '../engine/pipeline/checksum.js';
import { ensureBaseImage } from '../infra/base-image/build-base-image.js';
import { devCloudletTls } from '../infra/dev-pki.js';
import { REPO_ROOT } from '../infra/paths.js';
import { tempRoot } from '../test/support/fixtures.js';

/**
 * npm run bench:dirty-log [-- --sizes 1024,4096] [-- --epochs 8] [-- --json]
 *
 * What finding the guest's written pages costs, old against new, in one run: the hash scan (every
 * page of the RAM file read and hashed on the codec pool, as every epoch did) against the kernel
 * dirty log (PAGEMAP_SCAN, then only the pages it reports hashed), for the same kvstore guest
 * (256 MiB of records, 200 updates/s) in a 1 and a 4 GiB VM. Both trackers follow the one guest,
 * epoch by epoch (1 s apart, taking turns to go first), then at the stop with the guest paused —
 * the scan that sits inside the downtime. The hash scan is the baseline; ratios are old / new.
 * Writes docs/bench/dirty-log-bench.json.
 */
const { values } = parseArgs({
  options: { sizes: { type: 'string', default: '1024,4096' }, epochs: { type: 'string', default: '8' }, json: { type: 'boolean', default: false } },
});
const log = (l: string) => console.error(l);
const epochs = Number(values.epochs);
if (!(Number.isInteger(epochs) && epochs >= 1 && epochs <= 100)) throw new Error(`--epochs must be an integer from 1 to 100, got '${values.epochs}'`);
const sizes = values.sizes.split(',').map((s) => {
  const n = Number(s);
  if (!(Number.isInteger(n) && n >= 512 && n <= 8192)) throw new Error(`--sizes: '${s}' is not a guest size in MiB from 512 to 8192`);
  return n;
});

interface Row {
  guestMiB: number;
  tracking: string;
  /** Per live epoch, median ms: every page hashed, and the log's pages only. */
  epochHashScanMs: number;
  epochDirtyLogMs: number;
  /** Pages found changed per live epoch, median (the same for both: checked). */
  epochChangedPages: number;
  /** With the guest paused. */
  stopHashScanMs: number;
  stopDirtyLogMs: number;
  stopChangedPages: number;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const timed = async <T>(f: () => Promise<T>): Promise<[T, number]> => {
  const t = performance.now();
  const r = await f();
  return [r, performance.now() - t];
};

const rows: Row[] = [];
for (const guestMiB of sizes) rows.push(await measure(guestMiB));

console.log('finding the written pages, hash scan (old) against the kernel dirty log (new), medians:');
console.log('guest MiB  live epoch: hash ms  log ms  × faster  pages | stop (paused): hash ms  log ms  × faster  pages');
for (const r of rows) {
  console.log(
    `${String(r.guestMiB).padStart(9)}  ${r.epochHashScanMs.toFixed(0).padStart(19)} ${r.epochDirtyLogMs.toFixed(1).padStart(7)} ${(r.epochHashScanMs / r.epochDirtyLogMs).toFixed(0).padStart(9)} ${String(r.epochChangedPages).padStart(6)} |` +
      ` ${r.stopHashScanMs.toFixed(0).padStart(22)} ${r.stopDirtyLogMs.toFixed(1).padStart(7)} ${(r.stopHashScanMs / r.stopDirtyLogMs).toFixed(0).padStart(9)} ${String(r.stopChangedPages).padStart(6)}`,
  );
}
const out = join(REPO_ROOT, 'docs', 'bench', 'dirty-log-bench.json');
await mkdir(join(REPO_ROOT, 'docs', 'bench'), { recursive: true });
await writeFile(out, JSON.stringify({ bench: 'dirty-log', epochs, rows }, null, 2) + '\n');
console.error(`written: ${out}`);
if (values.json) console.log(JSON.stringify({ rows }));

async function measure(guestMiB: number): Promise<Row> {
  const base = await ensureBaseImage({ memoryMiB: guestMiB, accel: 'tcg', log });
  const root = await tempRoot('dirtylog-bench');
  const A = new Cloudlet({ name: 'A', runDir: join(root.dir, 'A'), imageCacheDir: join(root.dir, 'A-img'), dataHost: '127.0.0.1', prefix: 'ehoff', tls: await devCloudletTls('A') });
  try {
    await A.start();
    await A.images.install(base.dir);
    await A.launchVm('dl-vm', base.id, { name: 'kvstore', args: ['256', '200', '50'] }, { readyTimeoutMs: 900_000 });
    const vm = A.vm('dl-vm');
    await vm.serial.waitFor((t) => t.includes('EHOFF-KVSTORE-LOADED'), 900_000);
    await sleep(5_000);
    const pool = A.codecPool();
    const hash = await loadHash64();
    const start = await A.basePageHashes(vm.base);
    const hashed = MemoryTracker.fromBase(start, hash);
    const logged = MemoryTracker.fromBase(start, hash);
    const armed = await armDirtyLog((await vm.host.status()).qemuPid, vm.files.ramFile);
    if (!armed.log) throw new Error(`the kernel dirty log is not available here: ${describeTracking(armed.tracking)}`);
    logged.useDirtyLog(armed.log);
    const ram = await open(vm.files.ramFile, 'r');
    try {
      // An epoch of each: scan, then read what it found as if to send it.
      const epoch = async (tracker: MemoryTracker) => {
        const [changed, ms] = await timed(() => tracker.changedPagesOnPool(vm.files.ramFile, pool));
        await readAsSent(ram, tracker, changed);
        return { ms, pages: changed.length };
      };
      await epoch(hashed);
      await epoch(logged);
      const live: Array<{ hash: { ms: number; pages: number }; log: { ms: number; pages: number } }> = [];
      for (let e = 0; e < epochs; e++) {
        await sleep(1_000);
        if (e % 2 === 0) {
          const l = await epoch(logged);
          live.push({ log: l, hash: await epoch(hashed) });
        } else {
          const h = await epoch(hashed);
          live.push({ hash: h, log: await epoch(logged) });
        }
        log(`${guestMiB} MiB, epoch ${e + 1}: hash scan ${live.at(-1)!.hash.ms.toFixed(0)} ms (${live.at(-1)!.hash.pages} pages), dirty log ${live.at(-1)!.log.ms.toFixed(1)} ms (${live.at(-1)!.log.pages} pages)`);
      }
      // The stop as a handoff meets it: a live epoch's worth of writes since the last scan.
      await sleep(1_000);
      await vm.host.pause();
      const stopLog = await epoch(logged);
      const stopHash = await epoch(hashed);
      // The log must not have missed what the hash scan found: both now hold the paused RAM.
      if (logged.dirtyLogFailure !== null) throw new Error(`${guestMiB} MiB: the dirty log failed, the figures would be a hash scan's: ${logged.dirtyLogFailure}`);
      if (logged.digest() !== hashed.digest()) throw new Error(`${guestMiB} MiB: the dirty-log tracker's digest differs from the hash scan's — it missed a write`);
      await vm.host.cont();
      log(`${guestMiB} MiB, stop: hash scan ${stopHash.ms.toFixed(0)} ms, dirty log ${stopLog.ms.toFixed(1)} ms (${stopLog.pages} pages); digests agree`);
      return {
        guestMiB,
        tracking: describeTracking(armed.tracking),
        epochHashScanMs: round1(median(live.map((x) => x.hash.ms))),
        epochDirtyLogMs: round1(median(live.map((x) => x.log.ms))),
        epochChangedPages: median(live.map((x) => x.log.pages)),
        stopHashScanMs: round1(stopHash.ms),
        stopDirtyLogMs: round1(stopLog.ms),
        stopChangedPages: stopLog.pages,
      };
    } finally {
      await ram.close();
    }
  } finally {
    await A.destroyAll().catch(() => undefined);
    await A.stop().catch(() => undefined);
    await root.remove();
  }
}

async function readAsSent(ram: Awaited<ReturnType<typeof open>>, tracker: MemoryTracker, changed: number[]): Promise<void> {
  const page = Buffer.alloc(BLOCK_SIZE);
  for (const i of changed) {
    await ram.read(page, 0, BLOCK_SIZE, i * BLOCK_SIZE);
    tracker.sent(i, page);
  }
}

function round1(x: number): number {
  return Math.round(x * 10) / 10;
}
