import { access, readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { WorkflowFailedError, type WorkflowHandle } from '@temporalio/client';
import type { EmbeddedCluster } from '../../infra/embedded-cluster.js';
import { OutcomeSearchAttribute, WORKFLOW_TASK_QUEUE, progressQuery, type HandoffInput, type HandoffResult } from '../../workflows/definitions.js';
import type { VmDescription } from '../../activities/cloudlet-activities.js';
import { SOURCE_PHASE_FILE } from '../../engine/handoff/source-phase.js';
import { sendConsoleLine } from '../../engine/vm/qemu-vm.js';
import { CopyMonitor } from './copy-monitor.js';
import { executeWorkflow } from '../../client/execute-workflow.js';
import { handoff } from '../../workflows/handoff.js';
import { OPERATOR_TRIGGER, handoffStartOptions } from '../../workflows/handoff-audit.js';
import { recordHistory } from '../support/record-history.js';
import { guestBeats, resultThroughOutages } from '../support/site-checks.js';
import { destroyVm, launchVm } from '../../workflows/vm-lifecycle.js';

export type Outcome = 'moved' | 'stayed-at-source' | 'moved-after-commit-fault' | 'vm-lost';

/** One row of the fault table (the JSON shape the issue names). */
export interface CaseResult {
  fault: string;
  step: string;
  outcome: Outcome;
  vmRunningAt: string | null;
  copiesSeenRunning: number;
  stateVerified: boolean;
  bystandersAlive: boolean;
  leftovers: string[];
  bytesResent: number | null;
  bytesFirstAttempt: number | null;
  extraSeconds: number | null;
  /** Beyond the issue's shape: the case's own time and A's uplink bytes, what it required, whether it held, and the workflow's word. */
  seconds: number;
  uplinkBytes: number;
  expected: Outcome[];
  passed: boolean;
  failures: string[];
  detail: string;
}

/** What a case does to the running handoff, and what it must end with. */
export interface FaultCase {
  fault: string;
  step: string;
  expected: Outcome[];
  /** `between`: no handoff is started; the fault is the whole case (a worker's stop, say). */
  kind?: 'handoff' | 'between';
  /** The moved VM's workload, where the case needs its own (a guest that outruns the link). */
  workload?: { name: string; args: string[] };
  /** What the handoff is asked for beyond its VM and cloudlets (its post-copy policy, say). */
  input?: Pick<HandoffInput, 'postCopy' | 'bandwidthCapMbps'>;
  /** A case that needs no shared cluster (it makes and crashes its own): run before the others. */
  standalone?: (log: (l: string) => void) => Promise<CaseResult>;
  /** Sets the fault up before the handoff starts (a fault at its very first step). */
  before?(ctx: CaseContext): Promise<void>;
  /** Injects the fault while the handoff runs; resolves when the fault is over (a link back, a worker restarted). */
  inject(ctx: CaseContext): Promise<void>;
  /** Extra checks of its own, as failure messages. */
  check?(ctx: CaseContext, result: Omit<CaseResult, 'passed' | 'failures'>): Promise<string[]>;
}

export interface CaseContext {
  cluster: EmbeddedCluster;
  monitor: CopyMonitor;
  vmId: string;
  workflowId: string;
  handle?: WorkflowHandle;
  runDir(cloudlet: string): string;
  /** A cloudlet's cached copy of the base image (its folder). */
  baseImageDir(cloudlet: string): string;
  /** The tmpfs folder of a cloudlet's RAM files. */
  ramDir(cloudlet: string): string;
  /** Resolves when the source's persisted phase for this VM reaches `phase` (polled every 10 ms). */
  sourcePhase(phase: string, timeoutMs?: number): Promise<void>;
  /** Resolves when the target began fetching this VM's pages after a switch to post-copy (its record, polled every 50 ms). */
  postCopyFetching(timeoutMs?: number): Promise<void>;
  /** Whether the target's post-copy of this VM is still fetching (its record says no report yet). */
  postCopyStillFetching(): Promise<boolean>;
  /** Resolves when the workflow's step is `step`, plus `afterMs`. */
  workflowStep(step: string, afterMs?: number, timeoutMs?: number): Promise<void>;
  log(line: string): void;
}

export interface SuiteOptions {
  cluster: EmbeddedCluster;
  baseImageId: string;
  /** The guest's workload for the moved VM. */
  workload: { name: string; args: string[] };
  bystanderWorkload: { name: string; args: string[] };
  imageCacheDir(cloudlet: string): string;
  /** The tmpfs folder of each cloudlet's RAM files. */
  ramDir(cloudlet: string): string;
  log(line: string): void;
}


/** The clean case's figures, which the others are measured against. */
interface Baseline {
  seconds: number;
  uplinkBytes: number;
}

/** How long after its end a case watches where the VM runs. */
const SETTLE_MS = 3_000;
const HANDOFF_TIMEOUT_MS = 8 * 60_000;

/**
 * Runs fault cases one after another on one cluster: per case a fresh VM at A (its workload, and
 * a file written and synced whose checksum is taken), a handoff to B under the case's fault, a
 * monitor on every cloudlet's serial log, and afterwards where the VM runs, whether the file is
 * intact there, whether the bystanders beat, and what is left where the VM is not.
 */
export async function runFaultSuite(cases: FaultCase[], o: SuiteOptions): Promise<CaseResult[]> {
  const { cluster, log } = o;
  const cloudlets = [...cluster.workers.keys()];
  const runDirs = Object.fromEntries(cloudlets.map((c) => [c, cluster.workers.get(c)!.runDir]));
  const bystanders = ['A', 'B'].filter((c) => cloudlets.includes(c)).map((c) => ({ cloudlet: c, vmId: `by-${c.toLowerCase()}` }));
  for (const b of bystanders) await executeWorkflow(cluster.client, launchVm, { vmId: b.vmId, cloudlet: b.cloudlet, baseImageId: o.baseImageId, workload: o.bystanderWorkload });
  log(`bystanders: ${bystanders.map((b) => `${b.vmId} at ${b.cloudlet}`).join(', ')}`);
  let baseline: Baseline | null = null;
  const results: CaseResult[] = [];
  for (const [k, c] of cases.entries()) {
    const vmId = `f${k}-vm`;
    log(`case ${k + 1}/${cases.length}: ${c.fault} at ${c.step}`);
    const r: CaseResult = await runCase(c, vmId, o, runDirs, bystanders, baseline).catch((err: Error): CaseResult => ({
      fault: c.fault, step: c.step, outcome: 'vm-lost', vmRunningAt: null, copiesSeenRunning: 0, stateVerified: false, bystandersAlive: false,
      leftovers: [], bytesResent: null, bytesFirstAttempt: null, extraSeconds: null, seconds: 0, uplinkBytes: 0, expected: c.expected, passed: false,
      failures: [`the case itself failed: ${err.message}`], detail: err.stack ?? err.message,
    }));
    // The clean case is the yardstick of the others: their extra time and resent bytes.
    if (c.fault === 'none' && r.passed) {
      baseline = { seconds: r.seconds, uplinkBytes: r.uplinkBytes };
      Object.assign(r, { bytesResent: 0, bytesFirstAttempt: r.uplinkBytes, extraSeconds: 0 });
    }
    results.push(r);
    log(`  → ${r.outcome}, runs at ${r.vmRunningAt ?? 'nowhere'}, copies seen ${r.copiesSeenRunning}, ${r.passed ? 'PASS' : `FAIL: ${r.failures.join('; ')}`}`);
    log(`    ${r.detail.slice(0, 400)}`);
  }
  for (const b of bystanders) await executeWorkflow(cluster.client, destroyVm, { vmId: b.vmId, cloudlet: b.cloudlet }).catch(() => undefined);
  return results;
}

async function runCase(
  c: FaultCase,
  vmId: string,
  o: SuiteOptions,
  runDirs: Record<string, string>,
  bystanders: Array<{ cloudlet: string; vmId: string }>,
  baseline: Baseline | null,
): Promise<CaseResult> {
  const { cluster, log } = o;
  await executeWorkflow(cluster.client, launchVm, { vmId, cloudlet: 'A', baseImageId: o.baseImageId, workload: c.workload ?? o.workload });
  const sealed = await seal('A', vmId, runDirs);
  const monitor = new CopyMonitor(runDirs, vmId);
  monitor.start();
  const workflowId = `fault-${vmId}-${Date.now()}`;
  const ctx: CaseContext = {
    cluster,
    monitor,
    vmId,
    workflowId,
    runDir: (cloudlet) => runDirs[cloudlet]!,
    baseImageDir: (cloudlet) => join(o.imageCacheDir(cloudlet), o.baseImageId),
    ramDir: o.ramDir,
    log,
    sourcePhase: async (phase, timeoutMs = 5 * 60_000) => {
      const file = join(runDirs.A!, 'vms', vmId, SOURCE_PHASE_FILE);
      const deadline = Date.now() + timeoutMs;
      while (Date.now() < deadline) {
        const text = await readFile(file, 'utf8').catch(() => '');
        if (text.includes(`"phase":"${phase}"`)) return;
        await sleep(10);
      }
      throw new Error(`the source never reached phase ${phase}`);
    },
    postCopyFetching: async (timeoutMs = 5 * 60_000) => {
      const deadline = Date.now() + timeoutMs;
      while (Date.now() < deadline) {
        if (await access(join(runDirs.B!, 'vms', vmId, 'target-postcopy.json')).then(() => true, () => false)) return;
        await sleep(50);
      }
      throw new Error('the target never began a post-copy');
    },
    postCopyStillFetching: async () => {
      const text = await readFile(join(runDirs.B!, 'vms', vmId, 'target-postcopy.json'), 'utf8').catch(() => '');
      return text !== '' && !text.includes('"fetched"');
    },
    workflowStep: async (step, afterMs = 0, timeoutMs = 5 * 60_000) => {
      const deadline = Date.now() + timeoutMs;
      while (Date.now() < deadline) {
        const p = await ctx.handle?.query(progressQuery).catch(() => undefined);
        if (p?.step === step) {
          await sleep(afterMs);
          return;
        }
        await sleep(100);
      }
      throw new Error(`the workflow never reached step ${step}`);
    },
  };
  const started = Date.now();
  const uplinkBefore = await cluster.wan!.uplinkBytes('A');
  let result: HandoffResult | undefined;
  let failure: { type: string; message: string } | undefined;
  if (c.kind === 'between') {
    await c.inject(ctx);
  } else {
    await c.before?.(ctx);
    // Started as the CLI starts it (search attributes and all), so the audit record is checked too.
    const start = handoffStartOptions({ input: { vmId, source: 'A', target: 'B', ...c.input }, trigger: OPERATOR_TRIGGER, placementPolicy: 'operator', searchAttributes: true });
    ctx.handle = await cluster.client.workflow.start(handoff, { ...start, workflowId });
    const injected = c.inject(ctx).catch((err: Error) => log(`  injection: ${err.message}`));
    // The bound's timer ends with the race: eight minutes of it would keep the process alive.
    const bound = new AbortController();
    const outcome = await Promise.race([
      resultThroughOutages(ctx.handle).then((r) => ({ r }), (err: unknown) => ({ err })),
      sleep(HANDOFF_TIMEOUT_MS, undefined, { signal: bound.signal }).then(() => ({ timeout: true as const }), () => ({ timeout: true as const })),
    ]);
    bound.abort();
    await injected;
    if ('r' in outcome) result = outcome.r;
    else if ('err' in outcome) {
      const cause = outcome.err instanceof WorkflowFailedError ? (outcome.err.cause as (Error & { type?: string }) | undefined) : undefined;
      failure = { type: cause?.type ?? 'UNKNOWN', message: cause?.message ?? String(outcome.err) };
    } else failure = { type: 'TIMEOUT', message: `no answer from the workflow in ${HANDOFF_TIMEOUT_MS / 60_000} minutes` };
  }
  const seconds = (Date.now() - started) / 1000;
  // What crossed A's uplink during the case (data plane and Temporal alike), against the clean case's.
  const uplinkBytes = (await cluster.wan!.uplinkBytes('A')) - uplinkBefore;
  await sleep(SETTLE_MS);
  const runningAt = monitor.runningAt(SETTLE_MS - 500);
  await monitor.stop();
  const vmRunningAt = runningAt.length === 1 ? runningAt[0]! : null;
  const outcome: Outcome =
    vmRunningAt === null ? 'vm-lost' : vmRunningAt === 'A' ? 'stayed-at-source' : result ? 'moved' : 'moved-after-commit-fault';
  const sum = vmRunningAt ? await checksum(vmRunningAt, vmId, runDirs).catch(() => undefined) : undefined;
  const stateVerified = sum !== undefined && sum === sealed && (outcome !== 'moved' || result?.verified === true);
  const bystandersAlive = (await Promise.all(bystanders.map((b) => beats(cluster, b.cloudlet, b.vmId)))).every(Boolean);
  // Cleanup on the other cloudlet may still be under way: it has a minute.
  let leftovers = await leftoversOf(vmId, runDirs, vmRunningAt, o.ramDir);
  for (let waited = 0; leftovers.length > 0 && waited < 60_000; waited += 2_000) {
    await sleep(2_000);
    leftovers = await leftoversOf(vmId, runDirs, vmRunningAt, o.ramDir);
  }
  const partial = {
    fault: c.fault,
    step: c.step,
    outcome,
    vmRunningAt,
    copiesSeenRunning: monitor.copiesSeenRunning,
    stateVerified,
    bystandersAlive,
    leftovers,
    bytesResent: c.kind === 'between' ? 0 : baseline === null ? null : Math.max(0, uplinkBytes - baseline.uplinkBytes),
    bytesFirstAttempt: c.kind === 'between' ? 0 : baseline?.uplinkBytes ?? null,
    uplinkBytes,
    extraSeconds: c.kind === 'between' ? 0 : baseline === null ? null : Math.round((seconds - baseline.seconds) * 10) / 10,
    seconds,
    expected: c.expected,
    detail: failure ? `${failure.type}: ${failure.message}` : result ? `moved in ${(result.totalMs / 1000).toFixed(1)} s, ${(result.bytesSent / 1e6).toFixed(1)} MB` : 'no handoff',
  };
  // What the handoff recorded of its end (EdgeOutcome) must be what both cloudlets show.
  const recorded = c.kind === 'between' ? undefined : (await ctx.handle!.describe()).typedSearchAttributes.get(OutcomeSearchAttribute);
  if (ctx.handle) await recordHistory(cluster.client, ctx.handle.workflowId, `fault ${c.fault} ${c.step} ${outcome}`).catch((err: Error) => log(`  history not recorded: ${err.message}`));
  const failures = [
    !c.expected.includes(outcome) && `outcome ${outcome}, expected ${c.expected.join(' or ')}`,
    c.kind !== 'between' && recorded !== outcome && `the handoff recorded EdgeOutcome ${recorded ?? 'none'}, the cloudlets show ${outcome}`,
    monitor.copiesSeenRunning > 1 && `two copies ran at once (${monitor.duplicates.length} heartbeat counters printed at two cloudlets; ${monitor.maxAdvancingTogether} advancing in one sample)`,
    vmRunningAt !== null && !stateVerified && `the sealed file's checksum at ${vmRunningAt} is ${sum ?? 'unreadable'}, sealed ${sealed}`,
    !bystandersAlive && 'a bystander VM stopped beating',
    leftovers.length > 0 && `left behind: ${leftovers.join(', ')}`,
    ...((await c.check?.(ctx, partial)) ?? []),
  ].filter((f): f is string => typeof f === 'string');
  for (const cl of Object.keys(runDirs)) await executeWorkflow(cluster.client, destroyVm, { vmId, cloudlet: cl }).catch(() => undefined);
  return { ...partial, passed: failures.length === 0, failures };
}

/** Writes a file of random bytes in the guest, syncs it, and returns its SHA-256 as the guest computed it. */
async function seal(cloudlet: string, vmId: string, runDirs: Record<string, string>): Promise<string> {
  await sendConsoleLine(join(runDirs[cloudlet]!, 'vms', vmId, 'serial.sock'), 'seal sealed.bin');
  return waitForLine(runDirs[cloudlet]!, vmId, /EHOFF-SEALED ([0-9a-f]{64})/);
}

async function checksum(cloudlet: string, vmId: string, runDirs: Record<string, string>): Promise<string> {
  const before = await serialText(runDirs[cloudlet]!, vmId);
  await sendConsoleLine(join(runDirs[cloudlet]!, 'vms', vmId, 'serial.sock'), 'sum sealed.bin');
  return waitForLine(runDirs[cloudlet]!, vmId, /EHOFF-SUM ([0-9a-f]{64})/, before.length);
}

const serialText = (runDir: string, vmId: string) => readFile(join(runDir, 'vms', vmId, 'serial.log'), 'latin1').catch(() => '');

async function waitForLine(runDir: string, vmId: string, pattern: RegExp, from = 0, timeoutMs = 30_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const m = pattern.exec((await serialText(runDir, vmId)).slice(from));
    if (m) return m[1]!;
    await sleep(100);
  }
  throw new Error(`no ${pattern} on VM ${vmId}'s console in ${timeoutMs / 1000} s`);
}

const beats = (cluster: EmbeddedCluster, cloudlet: string, vmId: string) => guestBeats(cluster.client, cloudlet, vmId, 1_000);

/** What of the VM is left on the cloudlets where it does not run: folders, RAM files, mounts. */
async function leftoversOf(vmId: string, runDirs: Record<string, string>, runningAt: string | null, ramDir: (cloudlet: string) => string): Promise<string[]> {
  const left: string[] = [];
  const mounts = await readFile('/proc/mounts', 'utf8');
  for (const [cloudlet, runDir] of Object.entries(runDirs)) {
    if (cloudlet === runningAt) continue;
    const dir = join(runDir, 'vms', vmId);
    if (await readdir(dir).then(() => true, () => false)) left.push(`${cloudlet}: folder ${dir}`);
    const shm = await readdir(ramDir(cloudlet)).catch(() => [] as string[]);
    for (const f of shm.filter((f) => f.startsWith(`ehoff-${cloudlet}-${vmId}-`))) left.push(`${cloudlet}: ${join(ramDir(cloudlet), f)}`);
    if (mounts.includes(join(dir, 'mnt'))) left.push(`${cloudlet}: FUSE mount ${join(dir, 'mnt')}`);
  }
  return left;
}
