import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { connect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { dirtyLogLaunchPrefix } from '../memory/dirty-log.js';
import { QmpClient } from './qmp-client.js';
import { assertSafePath, qemuArgs, type MachineSpec, type VmPaths } from './machine.js';

export type RunState = 'running' | 'paused' | 'postmigrate' | 'inmigrate' | 'prelaunch' | 'finish-migrate' | string;

const QEMU_BINARY = process.env.EHOFF_QEMU ?? 'qemu-system-x86_64';
/**
 * util-linux's setpriv sets the parent-death signal before it execs QEMU: if the process that owns
 * a VM dies without cleaning up, its QEMU goes too instead of running on, orphaned, against a
 * FUSE disk nobody serves any more.
 */
const SETPRIV = '/usr/bin/setpriv';
const canSetParentDeathSignal = existsSync(SETPRIV);
/**
 * QEMU must not inherit the worker's other descriptors. libfuse opens /dev/fuse without
 * close-on-exec, so a QEMU started after another VM's disk was mounted would hold that FUSE
 * connection open; if the worker then dies while a request is in flight, the connection can
 * never abort and both QEMUs hang in the kernel for good (seen here). Bash closes every
 * descriptor above stderr, then execs (same PID).
 */
const CLOSE_INHERITED_FDS_AND_EXEC = 'for fd in /proc/$$/fd/*; do fd=${fd##*/}; if [ "$fd" -gt 2 ]; then eval "exec $fd>&-"; fi; done; exec "$@"';

/**
 * Drives one QEMU process through QMP: start (fresh or from saved device state), pause, continue,
 * save device state without RAM (x-ignore-shared: the RAM file travels separately), quit.
 */
export class QemuVm {
  private exitInfo?: string;

  private constructor(
    readonly paths: VmPaths,
    private readonly child: ChildProcess,
    private readonly qmp: QmpClient,
    private readonly stderrTail: string[],
  ) {
    child.on('exit', (code, signal) => {
      this.exitInfo = `QEMU exited (code ${code}, signal ${signal}): ${this.stderrTail.join('').slice(-2000)}`;
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /**
   * Starts QEMU paused. With `deviceState`, loads it as an incoming migration before returning;
   * with `awaitIncoming`, leaves it waiting for a `migrate-incoming` the caller sends. `netns`
   * runs it inside a network namespace (`ip netns exec` execs in place: the PID stays QEMU's).
   */
  static async start(
    spec: MachineSpec,
    paths: VmPaths,
    opts: { deviceState?: string; awaitIncoming?: boolean; diskFormat?: 'raw' | 'qcow2'; privateRam?: boolean; netns?: string; globals?: string[] } = {},
  ): Promise<QemuVm> {
    const args = qemuArgs(spec, paths, { incoming: opts.deviceState !== undefined || opts.awaitIncoming === true, diskFormat: opts.diskFormat, privateRam: opts.privateRam, globals: opts.globals });
    const binary = [...dirtyLogLaunchPrefix(), QEMU_BINARY];
    const qemu = canSetParentDeathSignal ? [SETPRIV, '--pdeathsig', 'KILL', '--', ...binary, ...args] : [...binary, ...args];
    const command = opts.netns ? ['ip', 'netns', 'exec', opts.netns, ...qemu] : qemu;
    const child = spawn('/bin/bash', ['-c', CLOSE_INHERITED_FDS_AND_EXEC, 'qemu-launcher', ...command], { stdio: ['ignore', 'ignore', 'pipe'] });
    const stderrTail: string[] = [];
    child.stderr!.setEncoding('utf8').on('data', (t: string) => {
      stderrTail.push(t);
      if (stderrTail.length > 50) stderrTail.shift();
    });
    const spawned = new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', (e) => reject(new Error(`cannot start ${QEMU_BINARY}: ${e.message}`)));
    });
    await spawned;
    let qmp: QmpClient;
    try {
      qmp = await Promise.race([
        QmpClient.connect(paths.qmpSocket),
        new Promise<never>((_, reject) =>
          child.once('exit', (code) => reject(new Error(`QEMU exited (code ${code}) before QMP was up: ${stderrTail.join('').slice(-2000)}`))),
        ),
      ]);
    } catch (err) {
      child.kill('SIGKILL');
      throw err;
    }
    const vm = new QemuVm(paths, child, qmp, stderrTail);
    if (opts.deviceState !== undefined) {
      try {
        await vm.loadDeviceState(opts.deviceState);
      } catch (err) {
        await vm.kill();
        throw err;
      }
    }
    return vm;
  }

  /** A QMP command not wrapped here (block jobs, NBD exports, migration tuning): for benchmarks and tools. */
  async command<T = unknown>(name: string, args?: Record<string, unknown>): Promise<T> {
    this.assertAlive();
    return this.qmp.execute<T>(name, args);
  }

  /** QMP events by name, with QEMU's own timestamp (wall clock, microseconds). */
  onEvent(name: string, listener: (atMs: number, data: unknown) => void): void {
    this.qmp.on('event', (msg: { event: string; data?: unknown; timestamp?: { seconds: number; microseconds: number } }) => {
      if (msg.event !== name) return;
      const atMs = msg.timestamp ? msg.timestamp.seconds * 1000 + msg.timestamp.microseconds / 1000 : Date.now();
      listener(atMs, msg.data);
    });
  }

  async status(): Promise<RunState> {
    this.assertAlive();
    const s = await this.qmp.execute<{ status: string }>('query-status');
    return s.status;
  }

  async pause(): Promise<void> {
    this.assertAlive();
    await this.qmp.execute('stop');
  }

  /** Continues the guest; after a completed outgoing migration QEMU re-activates the disk itself. */
  async cont(): Promise<void> {
    this.assertAlive();
    await this.qmp.execute('cont');
  }

  /**
   * Writes the device state (CPU, devices; not RAM) to `file`. The guest must be paused. RAM is
   * skipped because the backend is a shared file that reaches the target by its own path.
   */
  async saveDeviceState(file: string): Promise<void> {
    assertSafePath(file, 'device state');
    this.assertAlive();
    await this.setIgnoreShared();
    await this.qmp.execute('migrate', { uri: `exec:cat > ${file}` });
    await this.waitForMigration('outgoing');
  }

  /** Loads a device state into a QEMU started with `awaitIncoming`; it stays paused. */
  async loadDeviceState(file: string): Promise<void> {
    assertSafePath(file, 'device state');
    await this.setIgnoreShared();
    await this.qmp.execute('migrate-incoming', { uri: `exec:cat ${file}` });
    await this.waitForMigration('incoming');
  }

  private async setIgnoreShared(): Promise<void> {
    await this.qmp.execute('migrate-set-capabilities', {
      capabilities: [{ capability: 'x-ignore-shared', state: true }],
    });
  }

  private async waitForMigration(direction: 'outgoing' | 'incoming', timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      this.assertAlive();
      const m = await this.qmp.execute<{ status?: string; 'error-desc'?: string }>('query-migrate');
      if (m.status === 'completed') {
        // An incoming load is complete once the run state left 'inmigrate'.
        if (direction === 'outgoing' || (await this.status()) !== 'inmigrate') return;
      }
      if (m.status === 'failed' || m.status === 'cancelled') {
        throw new Error(`${direction} device state transfer ${m.status}: ${m['error-desc'] ?? 'no detail from QEMU'}`);
      }
      // Both directions sit on the stopped VM's path and take a few tens of ms: polled finely.
      await sleep(2);
    }
    throw new Error(`${direction} device state transfer did not complete within ${timeoutMs} ms`);
  }

  /** Asks QEMU to quit; kills it if it does not exit promptly. */
  async quit(): Promise<void> {
    if (this.exitInfo) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    try {
      await this.qmp.execute('quit');
    } catch {
      // The connection may close before the reply arrives; the exit below is what counts.
    }
    const gone = await Promise.race([exited.then(() => true), sleep(5_000).then(() => false)]);
    if (!gone) await this.kill();
    this.qmp.close();
  }

  async kill(): Promise<void> {
    if (this.exitInfo) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.kill('SIGKILL');
    await exited;
    this.qmp.close();
  }

  get exited(): boolean {
    return this.exitInfo !== undefined;
  }

  /** Why QEMU exited (its code or signal and the tail of its stderr); null while it runs. */
  get exitReason(): string | null {
    return this.exitInfo ?? null;
  }

  private assertAlive(): void {
    if (this.exitInfo) throw new Error(this.exitInfo);
  }
}

/** Sends a line to the guest's serial console (its command loop reads it). */
export async function sendConsoleLine(serialSocket: string, line: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const s = connect(serialSocket);
    s.once('error', reject);
    s.once('connect', () => s.end(line + '\n', () => resolve()));
  });
}

