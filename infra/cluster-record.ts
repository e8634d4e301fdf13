import { execFile } from 'node:child_process';
import { readFile, readdir, rm } from 'node:fs/promises';
import { promisify } from 'node:util';
import { z } from 'zod';
import { DurableRecord } from '../engine/durable-record.js';
import { killIfMatches, sweepRunFolder } from '../engine/host/vm-folder-sweep.js';
import { PREFIX } from './paths.js';

const run = promisify(execFile);

/**
 * What an embedded cluster started, kept in a file named by its run tag while it runs, so that
 * the next start with that tag can end what a crashed (kill -9) run left: its dev server,
 * workers and relays by PID (each checked against its command line first), its namespaces and
 * host link, its VMs (through their hosts, else swept).
 */
export const clusterRecordSchema = z.object({
  runTag: z.string(),
  owner: z.object({ pid: z.number().int(), startTicks: z.string() }),
  server: z.object({ pid: z.number().int(), dbFile: z.string() }).nullable(),
  workers: z.record(z.string(), z.object({ pid: z.number().int(), runDir: z.string() })),
  namespaces: z.array(z.string()),
  hostLinks: z.array(z.string()),
  relayPids: z.array(z.number().int()),
});
export type ClusterRecord = z.infer<typeof clusterRecordSchema>;

export function clusterRecord(runTag: string): DurableRecord<ClusterRecord> {
  return new DurableRecord(`/tmp/${PREFIX}-${runTag}.cluster.json`, clusterRecordSchema);
}

/** A process's start time in clock ticks since boot: with its PID, names it across PID reuse. */
export async function processStartTicks(pid: number): Promise<string | undefined> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  if (!stat || /\) Z /.test(stat)) return undefined;
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
}

/**
 * Ends what a crashed cluster with this run tag left, and returns what it removed. A cluster
 * with this tag that still runs is an error naming its PID: its parts are never touched.
 */
export async function sweepCrashedCluster(runTag: string): Promise<string[]> {
  const record = clusterRecord(runTag);
  const left = await record.read().catch(() => undefined);
  if (!left) return [];
  if ((await processStartTicks(left.owner.pid)) === left.owner.startTicks) {
    throw new Error(`a cluster with run tag '${runTag}' is running (pid ${left.owner.pid}); stop it first, or use another tag`);
  }
  const removed: string[] = [];
  for (const [name, w] of Object.entries(left.workers)) {
    if (await killIfMatches(w.pid, ['cloudlet-worker.ts', w.runDir])) removed.push(`worker ${name} pid ${w.pid}`);
  }
  if (left.server && (await killIfMatches(left.server.pid, [left.server.dbFile]))) removed.push(`dev server pid ${left.server.pid}`);
  for (const pid of left.relayPids) if (await killIfMatches(pid, ['ehoff-delay-relay'])) removed.push(`delay relay pid ${pid}`);
  for (const w of Object.values(left.workers)) {
    removed.push(...(await sweepRunFolder(w.runDir)));
    await rm(w.runDir, { recursive: true, force: true });
  }
  for (const ns of left.namespaces) if (await run('ip', ['netns', 'del', ns]).then(() => true, () => false)) removed.push(`namespace ${ns}`);
  for (const dev of left.hostLinks) if (await run('ip', ['link', 'del', dev]).then(() => true, () => false)) removed.push(`link ${dev}`);
  await record.remove();
  return removed;
}

/**
 * Ends what every crashed cluster left, whatever its run tag: those whose record names an owner
 * that no longer runs. Tags that carry a PID (a benchmark's, a test's) are never started again,
 * so the sweep by tag alone would leave their namespaces, workers and VMs for good.
 */
export async function sweepDeadClusters(): Promise<string[]> {
  const names = await readdir('/tmp').catch(() => [] as string[]);
  const removed: string[] = [];
  for (const name of names) {
    const m = new RegExp(`^${PREFIX}-(.+)\\.cluster\\.json$`).exec(name);
    if (!m) continue;
    const left = await clusterRecord(m[1]!).read().catch(() => undefined);
    if (!left || (await processStartTicks(left.owner.pid)) === left.owner.startTicks) continue;
    removed.push(...(await sweepCrashedCluster(m[1]!).catch(() => [] as string[])));
  }
  return removed;
}

