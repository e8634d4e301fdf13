import { connect, type TLSSocket } from 'node:tls';
import { setTimeout as sleep } from 'node:timers/promises';
import { FrameDecoder, FrameType, WIRE_PROTOCOL, WIRE_VERSION, encodeFrame, type Frame } from '../../engine/wire/frames.js';
import type { CloudletTls } from '../../engine/wire/cloudlet-tls.js';

/**
 * A raw data-plane client for tests: connects with `tls` (any part of it may be missing), sends a
 * hello for `handoffId` and then `after` (more frames, raw bytes), and collects what comes back
 * until the server closes (or `waitMs`, 10 s by default, pass: then `closed` is false). `helloAt`
 * and `closedAt` are epoch ms.
 */
export async function helloWith(
  port: number,
  tls: Partial<CloudletTls> & { ca: Buffer },
  handoffId: string,
  opts: { host?: string; attempt?: number; after?: Buffer[]; waitMs?: number } = {},
): Promise<{ secured: boolean; frames: Frame[]; closed: boolean; helloAt?: number; closedAt?: number; refusal?: string; error?: string }> {
  const socket: TLSSocket = connect({ host: opts.host ?? '127.0.0.1', port, ...tls, checkServerIdentity: () => undefined });
  const frames: Frame[] = [];
  let error: string | undefined;
  socket.on('error', (e) => (error ??= e.message));
  const decoder = socket.pipe(new FrameDecoder());
  decoder.on('data', (f: Frame) => frames.push(f));
  decoder.on('error', () => undefined);
  // Not events.once: it rejects on the 'error' a refused handshake brings.
  let closedAt: number | undefined;
  const closed = new Promise<boolean>((r) => socket.once('close', () => r(false)));
  void closed.then(() => (closedAt = Date.now()));
  const secured = await Promise.race([new Promise<boolean>((r) => socket.once('secureConnect', () => r(true))), closed]);
  const helloAt = Date.now();
  if (secured) {
    socket.write(encodeFrame({ type: FrameType.Hello, hello: { protocol: WIRE_PROTOCOL, version: WIRE_VERSION, handoffId, attempt: opts.attempt ?? 1 } }));
    for (const b of opts.after ?? []) socket.write(b);
  }
  const closedByPeer = await Promise.race([closed.then(() => true), sleep(opts.waitMs ?? 10_000).then(() => false)]);
  socket.destroy();
  const refusal = frames.find((f): f is Extract<Frame, { type: FrameType.Error }> => f.type === FrameType.Error)?.error.message;
  return { secured, frames, closed: closedByPeer, ...(secured ? { helloAt } : {}), ...(closedByPeer ? { closedAt } : {}), ...(refusal !== undefined ? { refusal } : {}), ...(error ? { error } : {}) };
}
