import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { Workload } from '../engine/names.js';
import { ensureBaseImage } from '../infra/base-image/build-base-image.js';
import { startEmbeddedCluster } from '../infra/embedded-cluster.js';
import { PREFIX, STATE_DIR } from '../infra/paths.js';
import { extractOverlay, xzSize, type FloorMeasurement } from './handoff/floor.js';
import { runProjectHandoff } from './handoff/project-handoff.js';
import { HandoffFailedError } from '../client/start-handoff.js';
import { runQemuMigration, type QemuSystem } from './handoff/qemu-migration.js';
import { cellTable, targetsReport } from './handoff/cell-summary.js';
import { SYSTEMS, markdownTable, memoryLabel, parseGuestMemory, writeReportFiles, type BenchOptions, type BenchRow, type System } from './handoff/report.js';
import { codeIdentity, loadResumable, segmentsSoFar, type Resumable } from './handoff/resume.js';
import type { Degradation } from './handoff/work-rate.js';

/**
 * npm run bench:handoff [-- --quick] [-- --json] [-- --workloads kvstore,fluid] [-- --mbps 5,10,25]
 *   [-- --rtt-ms 50] [-- --systems handoff,handoff-precopy,qemu-tuned,qemu-classic,floor] [-- --memory 1048568K]
 *   [-- --label NAME]
 * npm run bench:handoff -- --resume docs/bench/handoff-bench-NAME.json
 *   (an interrupted run goes on into the same report, with its options, on the same commit)
 *
 * For each workload × link rate, on one WAN testbed (tc-shaped veth between network namespaces,
 * 50 ms round trip between the cloudlets by the testbed's delay relay unless --rtt-ms says other)
 * and from the same base snapshot (1 GiB − 8 KiB of RAM, see GUEST_MEMORY): (a) this project's
 * handoff through the workflow, with post-copy allowed (`handoff`, the hybrid) and with pre-copy
 * only (`handoff-precopy`), (b) QEMU classic pre-copy + full disk mirror, (c) QEMU tuned (base as
 * backing file, top-layer mirror, multifd zstd level 3 on two channels), (d) the floor: xz -9e of
 * the stop-time overlay over the link.
 * Per row beside total time and downtime: the guest's degraded seconds (work-rate.ts), the bytes
 * resent, and a post-copy's remote faults. Writes docs/bench/handoff-bench[-quick|-NAME].{json,svg}
 * after every row; with --json the last stdout line is the rows.
 */
const { values } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    json: { type: 'boolean', default: false },
    workloads: { type: 'string' },
    mbps: { type: 'string' },
    'warmup-seconds': { type: 'string' },
    'classic-cap-factor': { type: 'string' },
    /** QEMU tuned only has to be shown slower than the handoff: bounded lower than classic. */
    'tuned-cap-factor': { type: 'string' },
    /** Round trip between the cloudlets (the testbed's delay relay); 0 for none. */
    'rtt-ms': { type: 'string' },
    /** Which systems to run, e.g. handoff alone to re-measure it across the matrix. */
    systems: { type: 'string' },
    /** The guest's RAM: 1048568K (1 GiB − 8 KiB) unless told, see GUEST_MEMORY. */
    memory: { type: 'string' },
    /** Names the output files: docs/bench/handoff-bench-<label>.{json,svg}. */
    label: { type: 'string' },
    /** An interrupted run's report (docs/bench/*.json): go on measuring into it, with its options. */
    resume: { type: 'string' },
  },
});

/**
 * 1 GiB less 8 KiB, for every system: QEMU 7.2's own migration under TCG corrupts a guest whose
 * RAM block is a multiple of 256 KiB (its fast dirty-bitmap sync clears dirty bits without
 * re-arming write tracking; fixed upstream in 9.0, commit 03bfc2188f), and a size that is not
 * takes the slow path — so QEMU's rows are valid migrations, and the handoff moves the same guest.
 */
const GUEST_MEMORY = '1048568K';

/**
 * Every workload beats every 50 ms: the guest-side gap is read from the heartbeats, and it
 * overstates the real pause by up to one interval (the beat before the pause may be that old,
 * the one after comes when the interrupted interval ends).
 */
const HEARTBEAT_MS = '50';

/** The paper's kinds of edge application, sized for a 1 GiB guest. */
function workloadFor(name: string, quick: boolean): Workload {
  switch (name) {
    case 'idle':
      return { name, args: [HEARTBEAT_MS] };
    // A few hundred MB of text-like records, a steady 200 updates/s (≈ 0.8 MB/s of pages dirtied).
    case 'kvstore':
      return { name, args: [quick ? '128' : '256', '200', HEARTBEAT_MS] };
    case 'imageproc':
      return { name, args: ['16', HEARTBEAT_MS] };
    // Two 32 MiB float grids rewritten every step (as fast as TCG runs it): a dirty rate far
    // above any of these links, data that compresses poorly.
    case 'fluid':
      return { name, args: ['32', HEARTBEAT_MS] };
    // 256 KiB/s of log lines to files on the disk.
    case 'logger':
      return { name, args: ['256', HEARTBEAT_MS] };
    default:
      throw new Error(`--workloads: unknown workload '${name}' (idle, kvstore, imageproc, fluid, logger)`);
  }
}

function parseList(raw: string | undefined, fallback: string[], what: string): string[] {
  const items = (raw ?? fallback.join(',')).split(',').map((s) => s.trim()).filter(Boolean);
  if (items.length === 0) throw new Error(`--${what} is empty`);
  return items;
}

/** The options of a new run, from the command line, each checked. */
function optionsFromArgs(): BenchOptions {
  const quick = values.quick;
  const workloads = parseList(values.workloads, quick ? ['kvstore'] : ['idle', 'kvstore', 'imageproc', 'fluid', 'logger'], 'workloads');
  for (const w of workloads) workloadFor(w, quick);
  const mbps = parseList(values.mbps, quick ? ['10'] : ['5', '10', '25'], 'mbps').map((r) => {
    const n = Number(r);
    if (!(n >= 1 && n <= 1000)) throw new Error(`--mbps: '${r}' is not a rate in Mbit/s between 1 and 1000`);
    return n;
  });
  const number = (name: string, raw: string | undefined, fallback: number, ok: (n: number) => boolean, want: string) => {
    const n = raw === undefined ? fallback : Number(raw);
    if (!ok(n)) throw new Error(`--${name} must be ${want}, got ${raw}`);
    return n;
  };
  const systems = parseList(values.systems, [...SYSTEMS], 'systems').map((s) => {
    if (!(SYSTEMS as readonly string[]).includes(s)) throw new Error(`--systems: unknown system '${s}' (${SYSTEMS.join(', ')})`);
    return s as System;
  });
  if (systems.includes('floor') && !systems.includes('qemu-tuned')) throw new Error('--systems: the floor is measured from the stopped qemu-tuned source; include qemu-tuned');
  return {
    quick,
    workloads,
    mbps,
    systems,
    rttMs: number('rtt-ms', values['rtt-ms'], 50, (n) => n >= 0 && n <= 2_000, 'a round trip in ms between 0 and 2000'),
    warmupSeconds: number('warmup-seconds', values['warmup-seconds'], 20, (n) => n >= 0, 'a number ≥ 0'),
    classicCapFactor: number('classic-cap-factor', values['classic-cap-factor'], 10, (n) => n >= 1, '≥ 1'),
    tunedCapFactor: number('tuned-cap-factor', values['tuned-cap-factor'], 3, (n) => n >= 1, '≥ 1'),
    memoryMiB: parseGuestMemory(values.memory ?? GUEST_MEMORY),
  };
}

/** With --resume, every option comes from the report: one other given would be a different run. */
const MATRIX_OPTIONS = ['quick', 'workloads', 'mbps', 'warmup-seconds', 'classic-cap-factor', 'tuned-cap-factor', 'rtt-ms', 'systems', 'memory', 'label'] as const;

async function main(): Promise<void> {
  const log = (l: string) => console.error(l);
  const code = await codeIdentity();
  let prior: Resumable | undefined;
  if (values.resume !== undefined) {
    const given = MATRIX_OPTIONS.filter((k) => values[k] !== undefined && values[k] !== false);
    if (given.length > 0) throw new Error(`--resume goes on with the report's own options; drop ${given.map((k) => `--${k}`).join(', ')}`);
    prior = await loadResumable(values.resume, code);
  }
  if (values.label !== undefined && !/^[a-z0-9-]{1,40}$/.test(values.label)) throw new Error(`--label must be 1-40 lowercase letters, digits or dashes, got '${values.label}'`);
  const options = prior?.options ?? optionsFromArgs();
  const { quick, systems, rttMs, warmupSeconds } = options;
  const workloads = options.workloads.map((w) => workloadFor(w, quick));
  const name = prior?.name ?? (values.label ? `handoff-bench-${values.label}` : quick ? 'handoff-bench-quick' : 'handoff-bench');
  if (code.dirty) log(`note: local changes to ${code.commit.slice(0, 12)}; this run cannot be resumed if interrupted`);

  const startedAt = Date.now();
  const workDir = `/tmp/${PREFIX}-bench-${process.pid}`;
  await mkdir(workDir, { recursive: true });
  const base = await ensureBaseImage({ memoryMiB: options.memoryMiB, accel: 'tcg', log });
  log(`base image ${base.id}: ${memoryLabel(options.memoryMiB)} RAM, 8 GiB disk`);
  const cluster = await startEmbeddedCluster({
    runTag: `bench-${process.pid}`,
    devServer: { dbFile: join(workDir, 'temporal.db') },
    cloudlets: ['A', 'B'].map((c) => ({ name: c, baseImages: [base.dir], imageCacheDir: join(STATE_DIR, 'bench-cloudlets', c, 'images') })),
    wan: { mbps: options.mbps[0]!, rttMs },
    log,
  });
  const rows: BenchRow[] = [...(prior?.rows ?? [])];
  const details: Record<string, unknown>[] = [...(prior?.details ?? [])];
  // Per workload, from the first stopped QEMU-tuned source: xz -9e runs in the background, and
  // what it measured is kept in the report as it arrives (a resumed run reads it back).
  const floorsMeasured: Record<string, FloorMeasurement> = { ...((prior?.floors ?? {}) as Record<string, FloorMeasurement>) };
  const floors = new Map<string, Promise<FloorMeasurement>>(Object.entries(floorsMeasured).map(([w, f]) => [w, Promise.resolve(f)]));
  // A tuned row measured before an interruption whose floor was still being compressed: run it
  // again, its stopped source is where the floor comes from.
  for (const w of options.workloads) {
    if (!systems.includes('floor') || floorsMeasured[w]) continue;
    const orphan = rows.findIndex((r) => r.workload === w && r.system === 'qemu-tuned' && !rows.some((f) => f.workload === w && f.mbps === r.mbps && f.system === 'floor'));
    if (orphan < 0) continue;
    const [dropped] = rows.splice(orphan, 1);
    const detail = details.findIndex((d) => d['workload'] === w && d['mbps'] === dropped!.mbps && d['system'] === 'qemu-tuned');
    if (detail >= 0) details.splice(detail, 1);
  }
  const has = (workload: string, mbps: number, system: System) => rows.some((r) => r.workload === workload && r.mbps === mbps && r.system === system);
  if (prior) log(`resuming ${name}: ${rows.length} rows measured in ${prior.segments.length} earlier run(s), ${(prior.segments.reduce((s, x) => s + x.seconds, 0) / 60).toFixed(1)} min`);
  // Written after every row, so an interrupted run of hours keeps what it measured.
  const writeReport = async (finished: boolean) => {
    // Code changed under a running benchmark: what follows is not that commit's, and the report
    // says so (it cannot be resumed).
    if (!code.dirty && (await codeIdentity()).dirty) {
      code.dirty = true;
      log('warning: the clone changed under this run; its report is marked as measured with local changes');
    }
    // Matrix order, whatever order a resumed run measured the rows in.
    const rank = (r: BenchRow) => [options.workloads.indexOf(r.workload), options.mbps.indexOf(r.mbps), SYSTEMS.indexOf(r.system)];
    rows.sort((a, b) => {
      const [x, y] = [rank(a), rank(b)];
      return x[0]! - y[0]! || x[1]! - y[1]! || x[2]! - y[2]!;
    });
    const { segments, wallSeconds } = segmentsSoFar(prior?.segments, { startedAtMs: startedAt }, Date.now());
    await writeReportFiles(name, { generatedAt: new Date().toISOString(), finished, wallSeconds, segments, code, options, memoryMiB: options.memoryMiB, warmupSeconds, rttMs, systems, rows, details, floors: floorsMeasured });
  };
  const background = new AbortController();
  // Ctrl-C: the cluster stops its workers and VMs, the testbed goes, xz is killed, the work folder goes.
  process.once('SIGINT', () => {
    interrupted = true;
    log(`interrupted: docs/bench/${name}.json keeps the ${rows.length} rows measured; go on with npm run bench:handoff -- --resume docs/bench/${name}.json`);
    background.abort();
    // (The QEMU baseline's RAM files of a row cut short are swept by the next run's start.)
    void cluster.stop().then(() => rm(workDir, { recursive: true, force: true })).then(() => process.exit(130));
  });
  try {
    for (const workload of workloads) {
      for (const mbps of options.mbps) {
        const cell = { workload: workload.name, mbps };
        const todo = systems.filter((s) => !has(workload.name, mbps, s));
        if (todo.length === 0) continue;
        await cluster.wan!.setRate(mbps);
        log(`── ${workload.name} at ${mbps} Mbit/s${todo.length < systems.length ? ` (resumed: ${todo.join(', ')})` : ''}`);

        // The hybrid (post-copy allowed, the default handoff of this benchmark), then pre-copy alone.
        for (const system of (['handoff', 'handoff-precopy'] as const).filter((s) => todo.includes(s))) {
          const postCopy = system === 'handoff' ? 'auto' : 'never';
          let h: Awaited<ReturnType<typeof runProjectHandoff>>;
          try {
            h = await runProjectHandoff({ cluster, baseImageId: base.id, workload, warmupSeconds, vmId: `bench-${workload.name}-${mbps}-${postCopy}`, postCopy, log });
          } catch (err) {
            // A handoff whose workflow failed is a result (its message says where the VM is):
            // recorded, and the run goes on. Anything else — the cluster, the testbed, this
            // benchmark — ends the run, as it would fail every row after it.
            if (interrupted || !(err instanceof HandoffFailedError)) throw err;
            const why = err.message;
            rows.push({ ...cell, system, totalSeconds: 0, downtimeSeconds: null, guestGapSeconds: null, wireBytes: 0, cpuSeconds: null, completed: false, guestContinued: null, failed: why });
            details.push({ ...cell, system, failed: why });
            log(`  ${system}: FAILED — ${why}`);
            await writeReport(false);
            continue;
          }
          const r = h.result;
          const pc = r.postCopy;
          const resentPages = r.epochs.reduce((n, e) => n + e.resentMemoryPages, 0) + (pc?.stalePagesSentBefore ?? 0);
          rows.push({
            ...cell,
            system,
            totalSeconds: r.totalMs / 1000,
            downtimeSeconds: r.downtimeMs / 1000,
            guestGapSeconds: r.guestGapMs === null ? null : r.guestGapMs / 1000,
            wireBytes: h.wireBytes,
            cpuSeconds: h.cpuSeconds,
            completed: r.verified && r.guestContinued,
            guestContinued: r.guestContinued,
            ...(r.verified && r.guestContinued && (!pc || pc.memoryDigestConfirmed) ? {} : { note: `verified ${r.verified}, guest continued ${r.guestContinued}${pc ? `, memory confirmed ${pc.memoryDigestConfirmed}` : ''}` }),
            ...(pc ? { postCopy: { stalePages: pc.stalePages, remoteFaults: pc.fetch.remoteFaults, faultLatencyMedianMs: pc.fetch.faultLatencyMedianMs } } : {}),
            resentBytes: resentPages * 4096,
            degraded: degradedOf(h.degradation),
          });
          details.push({ ...cell, system, resentDiskBlocks: r.epochs.reduce((n, e) => n + e.resentDiskBlocks, 0), downtimeBreakdown: r.downtimeBreakdown, guestGapParts: r.guestGapParts, precopy: r.precopy, epochs: r.epochs, modeSwitches: r.modeSwitches.map((s) => `${s.from}→${s.to}`), bytesSent: r.bytesSent, stages: r.stages, postCopy: pc, degradation: h.degradation, steps: r.steps.map((x) => ({ step: x.step, ms: x.endedAt === undefined ? null : x.endedAt - x.startedAt })) });
          const g = r.guestGapParts;
          log(`  ${system}: ${fmt(rows.at(-1)!)} (${r.precopy.stopReason}, ${r.epochs.length} epochs; guest gap across the stop ${g.acrossStopMs} ms = ${g.beforePauseMs} before the pause + downtime + ${g.afterResumeMs} after cont${pc ? `; post-copy: ${pc.stalePages} pages after the resume, ${pc.fetch.remoteFaults} on demand, median ${pc.fetch.faultLatencyMedianMs} ms, all in ${(pc.fetch.ms / 1000).toFixed(1)} s` : ''})`);
          await writeReport(false);
        }

        const handoffRow = rows.find((r) => r.workload === workload.name && r.mbps === mbps && r.system === 'handoff' && !r.failed);
        const handoffSeconds = handoffRow ? handoffRow.totalSeconds : null;
        for (const system of (['qemu-tuned', 'qemu-classic'] as QemuSystem[]).filter((s) => todo.includes(s))) {
          // Each is bounded at a multiple of the handoff's time, its target ratio: past it, the
          // ratio is already met or missed, and at 5 Mbit/s an unbounded run could take hours.
          // (Without a handoff in the run: 10 minutes.)
          const factor = system === 'qemu-classic' ? options.classicCapFactor : options.tunedCapFactor;
          const capSeconds = handoffSeconds === null ? 600 : Math.max(60, Math.ceil(factor * handoffSeconds));
          const needFloor = systems.includes('floor') && !floors.has(workload.name) && system === 'qemu-tuned';
          const q = await runQemuMigration({
            system,
            base,
            wan: cluster.wan!,
            workload,
            warmupSeconds,
            capSeconds,
            workDir,
            log,
            ...(needFloor
              ? {
                  inspectStoppedSource: async (stopped) => {
                    const extract = await extractOverlay(base, stopped, join(workDir, `floor-${workload.name}.bin`));
                    log(`  floor: ${(extract.overlayBytes / 1e6).toFixed(1)} MB of stop-time overlay; xz -9e runs at low priority meanwhile`);
                    const { file, ...counts } = extract;
                    const measured = xzSize(file, background.signal).then(async (xz) => {
                      await rm(file, { force: true });
                      const floor = { ...counts, ...xz };
                      floorsMeasured[workload.name] = floor;
                      return floor;
                    });
                    measured.catch(() => undefined);
                    floors.set(workload.name, measured);
                  },
                }
              : {}),
          });
          rows.push({
            ...cell,
            system,
            totalSeconds: q.totalMs / 1000,
            downtimeSeconds: q.downtimeMs === null ? null : q.downtimeMs / 1000,
            guestGapSeconds: q.guestGapMs === null ? null : q.guestGapMs / 1000,
            wireBytes: q.wireBytes,
            cpuSeconds: q.cpuSeconds,
            // A migration whose guest did not go on is no migration: its time is not one to compare.
            completed: q.completed && q.guestContinued,
            guestContinued: q.completed ? q.guestContinued : null,
            ...(q.note ? { note: q.note } : {}),
            resentBytes: q.resentBytes,
            degraded: q.guestContinued ? degradedOf(q.degradation) : null,
            settings: q.settings,
          });
          details.push({ ...cell, system, qemuReportedDowntimeMs: q.qemuReportedDowntimeMs, guestContinued: q.guestContinued, capSeconds, settings: q.settings, degradation: q.degradation });
          log(`  ${system}: ${fmt(rows.at(-1)!)} (${q.settings})`);
          // (A floor still compressing is not in the report yet: a resumed run measures its tuned row again.)
          await writeReport(false);
        }

        if (todo.includes('floor')) {
          const floor = await floors.get(workload.name);
          if (!floor) throw new Error(`no floor for ${workload.name}: its qemu-tuned source was not measured in this run`);
          rows.push({
            ...cell,
            system: 'floor',
            totalSeconds: (floor.xzBytes * 8) / (mbps * 1e6),
            downtimeSeconds: null,
            guestGapSeconds: null,
            wireBytes: floor.xzBytes,
            cpuSeconds: floor.xzCpuSeconds,
            completed: true,
            guestContinued: null,
          });
          log(`  floor: ${fmt(rows.at(-1)!)} (${floor.changedChunks} changed chunks, ${floor.baseDuplicates} copies of base chunks, ${(floor.overlayBytes / 1e6).toFixed(1)} MB → xz ${(floor.xzBytes / 1e6).toFixed(1)} MB)`);
        }
        await writeReport(false);
      }
    }
  } finally {
    background.abort(); // only an xz still running after a failure
    await cluster.stop();
    await rm(workDir, { recursive: true, force: true });
  }

  await writeReport(true);
  console.log(markdownTable(rows));
  console.log(`\n${cellTable(rows)}\n\n${targetsReport(rows)}`);
  const { wallSeconds } = segmentsSoFar(prior?.segments, { startedAtMs: startedAt }, Date.now());
  log(`wrote docs/bench/${name}.json and .svg; ${(wallSeconds / 60).toFixed(1)} min of measuring in all${prior ? ` (${prior.segments.length + 1} runs)` : ''}`);
  if (values.json) console.log(JSON.stringify({ rows }));
}

/** A row's degraded seconds, from the work-rate watch (null where it could not be measured). */
function degradedOf(d: Degradation | null): BenchRow['degraded'] {
  return d && d.kind !== 'unmeasured' ? { seconds: d.seconds, recovered: d.kind === 'recovered' } : null;
}

function fmt(r: BenchRow): string {
  const s = (v: number | null) => (v === null ? '—' : `${v.toFixed(2)} s`);
  const degraded = r.degraded ? `${r.degraded.recovered ? '' : '≥ '}${r.degraded.seconds.toFixed(2)} s` : '—';
  const resent = r.resentBytes === null || r.resentBytes === undefined ? '—' : `${(r.resentBytes / 1e6).toFixed(1)} MB`;
  return `${r.completed ? '' : '≥ '}${r.totalSeconds.toFixed(1)} s total, downtime ${s(r.downtimeSeconds)}, guest gap ${s(r.guestGapSeconds)}, degraded ${degraded}, ${(r.wireBytes / 1e6).toFixed(1)} MB on the wire (${resent} resent), ${r.cpuSeconds?.toFixed(1) ?? '—'} CPU s`;
}


/** Set by Ctrl-C: the run's own failures that follow (its cluster stopped under it) are not news. */
let interrupted = false;

main().then(
  () => process.exit(0),
  (err) => {
    if (interrupted) return; // the SIGINT handler exits once the cluster has stopped
    console.error(`bench:handoff failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
    process.exit(1);
  },
);
