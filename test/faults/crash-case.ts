import { spawn } from 'node:child_process';
import { access, readFile, readdir, rm } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { clusterRecord, sweepCrashedCluster, type ClusterRecord } from '../../infra/cluster-record.js';
import { readHostRecord, vmFolders } from '../../engine/host/vm-folder-sweep.js';
import { HOST_PIDS_FILE, hostPidsSchema, sentChunksFile } from '../../engine/host/host-protocol.js';
import { join } from 'node:path';
import type { CaseResult } from './fault-suite.js';

const run = promisify(execFile);
const CHILD = fileURLToPath(new URL('./crash-child.ts', import.meta.url));

/**
 * The test parent and its workers killed -9 mid-handoff: a child process runs a cluster and a
 * handoff; once it streams, the child, its dev server's parent-less server, and its workers are
 * killed -9 (the VM hosts, QEMUs, relays and namespaces stay, as after a real crash). Then the
 * next start with the same run tag must remove every one of them: this checks each by PID, name
 * and path, from what the crashed run had recorded.
 */
export async function runCrashCase(log: (l: string) => void): Promise<CaseResult> {
  const runTag = `faults-crash-${process.pid}`;
  const child = spawn(process.execPath, ['--import', 'tsx', CHILD, runTag], { stdio: ['ignore', 'pipe', 'inherit'] });
  const streaming = await new Promise<boolean>((resolve) => {
    createInterface({ input: child.stdout! }).on('line', (l) => l === 'STREAMING' && resolve(true));
    child.once('exit', () => resolve(false));
  });
  const left = await clusterRecord(runTag).read();
  const failures: string[] = [];
  if (!streaming || !left) {
    child.kill('SIGKILL');
    return result(['the doomed run never reached its stream'], [], 'crash');
  }
  // What the crash leaves, from the record and the VM folders, before anything is swept.
  const hostPids: number[] = [];
  const ramFiles: string[] = [];
  const mounts: string[] = [];
  for (const w of Object.values(left.workers)) {
    for (const dir of await vmFolders(w.runDir)) {
      const pids = hostPidsSchema.safeParse(JSON.parse((await readFile(join(dir, HOST_PIDS_FILE), 'utf8').catch(() => '{}')) || '{}'));
      if (pids.success) hostPids.push(pids.data.hostPid, ...(pids.data.qemuPid === null ? [] : [pids.data.qemuPid]));
      const rec = await readHostRecord(dir);
      if (rec) (ramFiles.push(rec.files.ramFile, sentChunksFile(rec.files)), mounts.push(rec.files.mountPoint));
    }
  }
  child.kill('SIGKILL');
  for (const w of Object.values(left.workers)) killQuietly(w.pid);
  log(`  killed -9: the run's parent and its workers ${Object.values(left.workers).map((w) => w.pid).join(', ')}; left running: its dev server, ${hostPids.length} host/QEMU processes, ${left.relayPids.length} relays; and ${left.namespaces.length} namespaces`);
  await new Promise((r) => setTimeout(r, 1_000));
  const swept = await sweepCrashedCluster(runTag);
  log(`  the next start swept ${swept.length} leftovers`);
  const leftovers = await stillThere(left, hostPids, ramFiles, mounts);
  // The doomed run's database is this test's own, not a leftover the sweep should know of.
  if (left.server) await rm(left.server.dbFile, { force: true });
  if (leftovers.length > 0) failures.push(`left after the sweep: ${leftovers.join(', ')}`);
  return result(failures, leftovers, `swept ${swept.length}: ${swept.join('; ')}`);
}

function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

async function stillThere(left: ClusterRecord, hostPids: number[], ramFiles: string[], mounts: string[]): Promise<string[]> {
  const found: string[] = [];
  const alive = async (pid: number) => readFile(`/proc/${pid}/stat`, 'utf8').then((s) => !/\) Z /.test(s), () => false);
  for (const pid of [...hostPids, ...left.relayPids, ...Object.values(left.workers).map((w) => w.pid), ...(left.server ? [left.server.pid] : [])]) {
    if (await alive(pid)) found.push(`process ${pid}`);
  }
  const { stdout } = await run('ip', ['netns', 'list']);
  for (const ns of left.namespaces) if (stdout.split('\n').some((l) => l.split(' ')[0] === ns)) found.push(`namespace ${ns}`);
  const shm = await readdir('/dev/shm');
  for (const f of ramFiles) if (shm.includes(f.replace('/dev/shm/', ''))) found.push(`tmpfs file ${f}`);
  const mounted = await readFile('/proc/mounts', 'utf8');
  for (const m of mounts) if (mounted.includes(` ${m} `)) found.push(`mount ${m}`);
  for (const w of Object.values(left.workers)) if (await access(w.runDir).then(() => true, () => false)) found.push(`run folder ${w.runDir}`);
  if (await clusterRecord(left.runTag).read().catch(() => undefined)) found.push('the cluster record');
  return found;
}

function result(failures: string[], leftovers: string[], detail: string): CaseResult {
  return {
    fault: 'the test parent and workers killed -9 mid-handoff',
    step: 'stream',
    outcome: 'vm-lost',
    vmRunningAt: null,
    copiesSeenRunning: 0,
    stateVerified: false,
    bystandersAlive: true,
    leftovers,
    bytesResent: null,
    bytesFirstAttempt: null,
    extraSeconds: null,
    seconds: 0,
    uplinkBytes: 0,
    expected: ['vm-lost'],
    passed: failures.length === 0,
    failures,
    detail,
  };
}
