import { join } from 'node:path';
import { mkdir, rm } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { ensureBaseImage } from '../../infra/base-image/build-base-image.js';
import { startEmbeddedCluster } from '../../infra/embedded-cluster.js';
import { STATE_DIR } from '../../infra/paths.js';
import { FAULT_CASES } from './fault-cases.js';
import { mountTmpfs, unmountTmpfs } from './tmpfs-mount.js';

/** Cloudlet B's own tmpfs for RAM files (see the "/dev/shm full" case). */
const B_RAM_DIR = '/tmp/ehoff-faults-ram-B';
import { runFaultSuite, type CaseResult } from './fault-suite.js';

/**
 * `npm run test:faults [-- --cases 1,3,kill] [--json]`: every fault case against the real stack —
 * the dev server and workers for cloudlets A, B and C on the WAN testbed (10 Mbit/s, 50 ms),
 * workers restarted 5 s after they die, a kvstore guest moved A → B under each fault, one
 * bystander VM on A and on B — and a table of what happened. Exit status 1 if any case failed.
 */
async function main(): Promise<void> {
  const { values } = parseArgs({ options: { json: { type: 'boolean', default: false }, cases: { type: 'string' } } });
  const wanted = values.cases?.split(',').map((s) => s.trim()).filter(Boolean);
  // A number names a case by its place in the table; anything else matches its fault or step.
  const cases = FAULT_CASES.filter((c, k) => !wanted || wanted.some((w) => (/^\d+$/.test(w) ? w === String(k + 1) : `${c.fault} ${c.step}`.includes(w))));
  if (cases.length === 0) throw new Error(`--cases ${values.cases} matches no case; the cases are:\n${FAULT_CASES.map((c, k) => `  ${k + 1}. ${c.fault} — ${c.step}`).join('\n')}`);
  const log = (l: string) => (values.json ? console.error(l) : console.log(l));
  const base = await ensureBaseImage({ memoryMiB: 512, accel: 'tcg', log });
  // Cases that make (and crash) a cluster of their own run first, alone on the machine.
  const standalone: CaseResult[] = [];
  for (const c of cases.filter((c) => c.standalone)) {
    log(`case: ${c.fault} at ${c.step}`);
    const r = await c.standalone!(log);
    log(`  → ${r.passed ? 'PASS' : `FAIL: ${r.failures.join('; ')}`}`);
    standalone.push(r);
  }
  if (standalone.length === cases.length) return report(standalone, values.json);
  await mkdir(STATE_DIR, { recursive: true });
  const dbFile = join(STATE_DIR, `faults-${process.pid}.db`);
  // B's RAM files on a tmpfs of its own, which the "/dev/shm full" case fills.
  await mountTmpfs(B_RAM_DIR, 3072);
  const cluster = await startEmbeddedCluster({
    runTag: 'faults',
    devServer: { dbFile },
    cloudlets: ['A', 'B', 'C'].map((name) => ({
      name, baseImages: [base.dir], imageCacheDir: join(STATE_DIR, 'cloudlets', name, 'images'), ...(name === 'B' ? { ramDir: B_RAM_DIR } : {}),
    })),
    wan: { mbps: 10, rttMs: 50 },
    workerRestartDelayMs: 5_000,
    log,
  });
  let results: CaseResult[];
  try {
    results = await runFaultSuite(cases.filter((c) => !c.standalone), {
      cluster,
      baseImageId: base.id,
      workload: { name: 'kvstore', args: ['64', '500'] },
      bystanderWorkload: { name: 'heartbeat', args: ['4', '100'] },
      imageCacheDir: (name) => join(STATE_DIR, 'cloudlets', name, 'images'),
      ramDir: (name) => (name === 'B' ? B_RAM_DIR : '/dev/shm'),
      log,
    });
  } finally {
    await cluster.stop();
    await rm(dbFile, { force: true });
    await unmountTmpfs(B_RAM_DIR);
  }
  report([...results, ...standalone], values.json);
}

function report(results: CaseResult[], json: boolean | undefined): void {
  const log = (l: string) => (json ? console.error(l) : console.log(l));
  log(table(results));
  const passed = results.filter((r) => r.passed).length;
  log(`${passed} passed, ${results.length - passed} failed`);
  if (json) console.log(JSON.stringify({ cases: results }));
  process.exitCode = passed === results.length ? 0 : 1;
}

function table(results: CaseResult[]): string {
  const rows = results.map((r) => [
    r.fault, r.step, r.outcome, r.vmRunningAt ?? '—', String(r.copiesSeenRunning), r.stateVerified ? 'yes' : 'no', r.bystandersAlive ? 'yes' : 'no',
    r.bytesResent === null ? '—' : String(r.bytesResent), r.extraSeconds === null ? '—' : r.extraSeconds.toFixed(1), r.passed ? 'PASS' : `FAIL: ${r.failures.join('; ')}`,
  ]);
  const head = ['fault', 'injected', 'outcome', 'runs at', 'copies', 'state verified', 'bystanders', 'bytes resent', 'extra s', 'result'];
  return [head, head.map(() => '---'), ...rows].map((r) => `| ${r.join(' | ')} |`).join('\n');
}

main().catch((err) => {
  console.error(`fault suite: ${err instanceof Error ? err.stack : String(err)}`);
  process.exit(2);
});
