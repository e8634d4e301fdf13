import type { Socket } from 'node:net';
import { connectUnix } from '../unix-socket.js';
import { EventEmitter } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';

/** A QMP error reply, with QEMU's class and description. */
export class QmpError extends Error {
  constructor(
    readonly command: string,
    readonly errorClass: string,
    description: string,
  ) {
    super(`QMP ${command} failed: ${errorClass}: ${description}`);
  }
}

type Pending = { command: string; resolve: (v: unknown) => void; reject: (e: Error) => void };

/**
 * Minimal QMP client over a unix socket: capabilities negotiation, commands with ids, events.
 * One JSON object per line in both directions (QMP's framing).
 */
export class QmpClient extends EventEmitter {
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private buffered = '';
  private closed = false;

  private constructor(private readonly socket: Socket) {
    super();
    socket.setEncoding('utf8');
    socket.on('data', (text: string) => this.onData(text));
    socket.on('close', () => this.failAll(new Error('QMP connection closed')));
    socket.on('error', (err) => this.failAll(err));
  }

  /** Connects, retrying while QEMU creates the socket, then leaves capabilities-negotiation mode. */
  static async connect(socketPath: string, timeoutMs = 15_000): Promise<QmpClient> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const socket = await connectUnix(socketPath);
        const client = new QmpClient(socket);
        await client.waitForGreeting();
        await client.execute('qmp_capabilities');
        return client;
      } catch (err) {
        if (Date.now() > deadline) throw new Error(`cannot connect to QMP at ${socketPath}: ${String(err)}`);
        await sleep(50);
      }
    }
  }

  private greeting?: Promise<void>;
  private greeted?: () => void;

  private waitForGreeting(): Promise<void> {
    this.greeting ??= new Promise((resolve) => (this.greeted = resolve));
    return this.greeting;
  }

  async execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    if (this.closed) throw new Error(`QMP ${command}: connection closed`);
    const id = String(this.nextId++);
    const reply = new Promise<unknown>((resolve, reject) => this.pending.set(id, { command, resolve, reject }));
    this.socket.write(JSON.stringify(args ? { execute: command, arguments: args, id } : { execute: command, id }) + '\n');
    return (await reply) as T;
  }

  close(): void {
    this.closed = true;
    this.socket.destroy();
  }

  private onData(text: string): void {
    this.buffered += text;
    let newline: number;
    while ((newline = this.buffered.indexOf('\n')) >= 0) {
      const line = this.buffered.slice(0, newline).trim();
      this.buffered = this.buffered.slice(newline + 1);
      if (line) this.onMessage(JSON.parse(line) as Record<string, unknown>);
    }
  }

  private onMessage(msg: Record<string, unknown>): void {
    if ('QMP' in msg) {
      this.waitForGreeting();
      this.greeted?.();
      return;
    }
    if ('event' in msg) {
      this.emit('event', msg);
      this.emit(String(msg.event), msg.data);
      return;
    }
    const id = String(msg.id);
    const pending = this.pending.get(id);
    if (!pending) return;
    this.pending.delete(id);
    if ('error' in msg) {
      const e = msg.error as { class?: string; desc?: string };
      pending.reject(new QmpError(pending.command, e.class ?? 'GenericError', e.desc ?? 'unknown'));
    } else {
      pending.resolve(msg.return);
    }
  }

  private failAll(err: Error): void {
    this.closed = true;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }
}
