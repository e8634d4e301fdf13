import { spawn } from 'node:child_process';
import { mkdir, open, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * The cluster's daemons run detached (they outlive `npm run cluster -- up` and the test that
 * started them), each with its PID in a file. Every PID is checked against its command line
 * before it is trusted or signalled, so a reused PID is never killed; nothing is found by name.
 */

/** The process's argv, or undefined if it is gone or a zombie. */
async function argvOf(pid: number): Promise<string[] | undefined> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  if (!stat || /\) [ZX] /.test(stat)) return undefined;
  const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => undefined);
  return cmdline ? cmdline.split('\0') : undefined;
}

/** Whether `pid` runs with every one of `needles` in some argument of its command line. */
export async function runsWith(pid: number, needles: string[]): Promise<boolean> {
  const argv = await argvOf(pid);
  return argv !== undefined && needles.every((n) => argv.some((a) => a.includes(n)));
}

/** The PID in `pidFile` if that process runs and its command line holds `needles`; a stale file is removed. */
export async function livePid(pidFile: string, needles: string[]): Promise<number | undefined> {
  const text = await readFile(pidFile, 'utf8').catch(() => undefined);
  if (text === undefined) return undefined;
  const pid = Number.parseInt(text.trim(), 10);
  if (Number.isInteger(pid) && pid > 0 && (await runsWith(pid, needles))) return pid;
  await rm(pidFile, { force: true });
  return undefined;
}

export interface DaemonSpec {
  command: string;
  args: string[];
  logFile: string;
  pidFile: string;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Run as this user (PostgreSQL refuses root). */
  user?: { uid: number; gid: number };
}

/**
 * Starts a detached daemon with stdout and stderr appended to its log, writes its PID file and
 * returns the PID. The caller waits for it to serve; `exited` reports an early death.
 */
export async function spawnDaemon(spec: DaemonSpec): Promise<{ pid: number; exited: () => boolean }> {
  await mkdir(dirname(spec.logFile), { recursive: true });
  const log = await open(spec.logFile, 'a', 0o600);
  try {
    await log.write(`--- ${new Date().toISOString()} ${spec.command} ${spec.args.join(' ')}\n`);
    const child = spawn(spec.command, spec.args, {
      cwd: spec.cwd,
      env: spec.env ?? process.env,
      detached: true,
      stdio: ['ignore', log.fd, log.fd],
      ...(spec.user ?? {}),
    });
    let gone = false;
    child.once('exit', () => (gone = true));
    const pid = await new Promise<number>((resolve, reject) => {
      child.once('error', reject);
      child.once('spawn', () => resolve(child.pid!));
    });
    child.unref();
    await writeFile(spec.pidFile, `${pid}\n`);
    return { pid, exited: () => gone };
  } finally {
    await log.close();
  }
}

/**
 * Sends `signal` to the process in `pidFile` if it is the one `needles` name, waits up to
 * `graceMs` for it to end, then SIGKILLs it. Returns the PID it ended, or undefined if none ran.
 */
export async function stopDaemon(pidFile: string, needles: string[], signal: NodeJS.Signals, graceMs: number): Promise<number | undefined> {
  const pid = await livePid(pidFile, needles);
  if (pid === undefined) return undefined;
  process.kill(pid, signal);
  if (!(await waitGone(pid, graceMs))) {
    if (signal !== 'SIGKILL' && (await runsWith(pid, needles))) process.kill(pid, 'SIGKILL');
    if (!(await waitGone(pid, 10_000))) throw new Error(`pid ${pid} (${pidFile}) survived SIGKILL for 10 s`);
  }
  await rm(pidFile, { force: true });
  return pid;
}

/** Whether `pid` has ended (or become a zombie) within `ms`. */
export async function waitGone(pid: number, ms: number): Promise<boolean> {
  for (const deadline = Date.now() + ms; ; await sleep(50)) {
    if ((await argvOf(pid)) === undefined) return true;
    if (Date.now() > deadline) return false;
  }
}

/** The last `lines` lines of a log, for an error message. */
export async function logTail(file: string, lines = 15): Promise<string> {
  const text = await readFile(file, 'utf8').catch(() => '');
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}
