import type { Socket } from 'node:net';
import { connectUnix } from '../unix-socket.js';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { HandoffError, type HandoffErrorCode } from '../errors.js';
import { hostReplySchema, hostStatusSchema, type HostMethod, type HostReplies, type HostStatus } from './host-protocol.js';

/** How long one request to a host may take; saving or loading a device state is the slowest. */
const REQUEST_TIMEOUT_MS = 90_000;

type Pending = { method: HostMethod; resolve: (v: unknown) => void; reject: (e: Error) => void; timer: NodeJS.Timeout };

/**
 * A worker's connection to one VM host (see VmHostServer): the VM's run control and its disk's
 * change tracking, as requests over the host's unix socket. If the host goes away, every request
 * fails with VM_LOST naming the VM, and `lost` says why.
 */
export class VmHostClient {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private lostReason?: string;
  private closing = false;
  private readonly lostListeners: Array<(reason: string) => void> = [];

  private constructor(
    readonly vmId: string,
    private readonly socket: Socket,
  ) {
    socket.on('error', (err) => this.fail(`its host process is gone (its socket failed: ${err.message})`));
    socket.on('close', () => this.fail('its host process closed the connection (it exited or was killed)'));
    const lines = createInterface({ input: socket, crlfDelay: Infinity });
    // readline re-emits its input's errors; the socket's own handler above reports them.
    lines.on('error', () => undefined);
    lines.on('line', (line) => this.onLine(line));
  }

  /** Connects, retrying until `timeoutMs` while the host is still starting. */
  static async connect(vmId: string, socketPath: string, timeoutMs: number, stillStarting: () => boolean = () => true): Promise<VmHostClient> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const socket = await connectUnix(socketPath);
        const client = new VmHostClient(vmId, socket);
        await client.status();
        return client;
      } catch (err) {
        if (Date.now() > deadline || !stillStarting()) throw new HandoffError('VM_LOST', `the host of VM '${vmId}' does not answer on ${socketPath}: ${(err as Error).message}`);
        await sleep(50);
      }
    }
  }

  /** Why the host is gone, or undefined while it answers. */
  get lost(): string | undefined {
    return this.lostReason;
  }

  onLost(listener: (reason: string) => void): void {
    if (this.lostReason !== undefined) listener(this.lostReason);
    else this.lostListeners.push(listener);
  }

  call<M extends HostMethod>(method: M, args: Record<string, unknown> = {}, timeoutMs = REQUEST_TIMEOUT_MS): Promise<HostReplies[M]> {
    if (this.lostReason !== undefined) return Promise.reject(this.lostError());
    const id = this.nextId++;
    return new Promise<HostReplies[M]>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new HandoffError('VM_LOST', `the host of VM '${this.vmId}' did not answer '${method}' within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { method, resolve: resolve as (v: unknown) => void, reject, timer });
      this.socket.write(JSON.stringify({ id, method, args }) + '\n');
    });
  }

  async status(): Promise<HostStatus> {
    return hostStatusSchema.parse(await this.call('status'));
  }

  async runState(): Promise<string> {
    return (await this.status()).runState;
  }

  async pause(): Promise<void> {
    await this.call('pause');
  }

  async cont(): Promise<void> {
    await this.call('cont');
  }

  async saveDeviceState(file: string): Promise<void> {
    await this.call('saveDeviceState', { file });
  }

  async loadDeviceState(file: string): Promise<void> {
    await this.call('loadDeviceState', { file });
  }

  /** Ends the VM and its host; resolves once the host confirmed or went away. */
  async destroy(): Promise<void> {
    this.closing = true;
    await this.call('destroy').catch((err: unknown) => {
      // Gone before it could answer is gone all the same.
      if (!(err instanceof HandoffError && err.code === 'VM_LOST')) throw err;
    });
    this.socket.destroy();
  }

  /** Drops the connection; the host and its VM go on. */
  close(): void {
    this.closing = true;
    this.socket.destroy();
  }

  private onLine(line: string): void {
    let reply;
    try {
      reply = hostReplySchema.parse(JSON.parse(line));
    } catch (err) {
      this.fail(`its host process sent a malformed reply: ${(err as Error).message}`);
      this.socket.destroy();
      return;
    }
    const p = this.pending.get(reply.id);
    if (!p) return;
    this.pending.delete(reply.id);
    clearTimeout(p.timer);
    if (reply.ok) p.resolve(reply.result);
    else if (reply.error.code) p.reject(new HandoffError(reply.error.code as HandoffErrorCode, reply.error.message));
    else p.reject(new Error(`VM '${this.vmId}' ${p.method}: ${reply.error.message}`));
  }

  private lostError(): HandoffError {
    return new HandoffError('VM_LOST', `VM '${this.vmId}' is lost: ${this.lostReason}`);
  }

  private fail(reason: string): void {
    if (this.lostReason !== undefined) return;
    this.lostReason = this.closing ? 'its connection was closed by this worker' : reason;
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(this.lostError());
    }
    this.pending.clear();
    if (!this.closing) for (const l of this.lostListeners) l(reason);
  }
}
