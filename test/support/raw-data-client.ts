import { connect, type TLSSocket } from 'node:tls';
import { setTimeout as sleep } from 'node:timers/promises';
import { FrameDecoder, FrameType, WIRE_PROTOCOL, WIRE_VERSION, encodeFrame, type Frame } from '../../engine/wire/frames.js';
import type { CloudletTls } from '../../engine/wire/cloudlet-tls.js';

/**
 * A raw data-plane client for tests: connects with `tls` (any part of it may be missing), sends a
 * hello for `handoffId` and then `after` (more frames, raw bytes), and collects what comes back
 * until the server closes (or 10 s pass).
 */
export async function helloWith(
  port: number,
  tls: Partial<CloudletTls> & { ca: Buffer },
  handoffId: string,
  opts: { host?: string; attempt?: number; after?: Buffer[] } = {},
): Promise<{ secured: boolean; frames: Frame[]; refusal?: string; error?: string }> {
  const socket: TLSSocket = connect({ host: opts.host ?? '127.0.0.1', port, ...tls, checkServerIdentity: () => undefined });
  const frames: Frame[] = [];
  let error: string | undefined;
  socket.on('error', (e) => (error ??= e.message));
  const decoder = socket.pipe(new FrameDecoder());
  decoder.on('data', (f: Frame) => frames.push(f));
  decoder.on('error', () => undefined);
  // Not events.once: it rejects on the 'error' a refused handshake brings.
  const closed = new Promise<boolean>((r) => socket.once('close', () => r(false)));
  const secured = await Promise.race([new Promise<boolean>((r) => socket.once('secureConnect', () => r(true))), closed]);
  if (secured) {
    socket.write(encodeFrame({ type: FrameType.Hello, hello: { protocol: WIRE_PROTOCOL, version: WIRE_VERSION, handoffId, attempt: opts.attempt ?? 1 } }));
    for (const b of opts.after ?? []) socket.write(b);
  }
  await Promise.race([closed, sleep(10_000)]);
  socket.destroy();
  const refusal = frames.find((f): f is Extract<Frame, { type: FrameType.Error }> => f.type === FrameType.Error)?.error.message;
  return { secured, frames, ...(refusal !== undefined ? { refusal } : {}), ...(error ? { error } : {}) };
}
