import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer as createTcpServer, connect as connectTcp, type Socket } from 'node:net';
import { createServer as createTlsServer, connect as connectTls } from 'node:tls';
import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import { expectCloudlet } from '../../engine/wire/cloudlet-tls.js';
import { devCloudletTls } from '../../infra/dev-pki.js';

/**
 * One end of the TLS-cost benchmark, run inside a cloudlet's namespace. `serve`: a plain TCP and
 * a mutual-TLS 1.3 listener (the data plane's settings) with one handler: take a length-prefixed
 * block, answer its end with an ack, then the commit with a committed — the data plane's stop
 * phase. `send`: for each round, both transports in turns, connect (the handshake happens during
 * the live phase, outside the pause), idle, then time block + end → ack → commit → committed.
 */

const serveArgs = z.object({ host: z.string(), plainPort: z.number().int(), tlsPort: z.number().int(), pkiDir: z.string() });
const sendArgs = serveArgs.extend({ rounds: z.number().int().positive(), blockBytes: z.number().int().positive() });

function handle(socket: Socket): void {
  let need = -1;
  let got = 0;
  let phase: 'block' | 'commit' = 'block';
  socket.setNoDelay(true);
  socket.on('error', () => undefined);
  socket.on('data', (chunk: Buffer) => {
    if (phase === 'commit') {
      socket.end(Buffer.from('D'));
      return;
    }
    if (need < 0) {
      need = chunk.readUInt32LE(0) + 1;
      chunk = chunk.subarray(4);
    }
    got += chunk.length;
    if (got >= need) {
      phase = 'commit';
      socket.write(Buffer.from('A'));
    }
  });
}

async function serve(a: z.infer<typeof serveArgs>): Promise<void> {
  const B = await devCloudletTls('B', a.pkiDir);
  const plain = createTcpServer(handle);
  const tls = createTlsServer({ ...B, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' }, handle);
  plain.listen(a.plainPort, a.host);
  tls.listen(a.tlsPort, a.host);
  await Promise.all([once(plain, 'listening'), once(tls, 'listening')]);
  console.log('LISTENING');
  await new Promise(() => undefined);
}

async function next(socket: Socket): Promise<Buffer> {
  const [b] = (await once(socket, 'data')) as [Buffer];
  return b;
}

async function send(a: z.infer<typeof sendArgs>): Promise<void> {
  const A = await devCloudletTls('A', a.pkiDir);
  const block = randomBytes(a.blockBytes);
  const header = Buffer.alloc(4);
  header.writeUInt32LE(block.length, 0);
  for (let round = 0; round < a.rounds; round++) {
    // Alternating which goes first, so a drift in the machine's load falls on both alike.
    const order = round % 2 === 0 ? (['plain', 'tls'] as const) : (['tls', 'plain'] as const);
    for (const transport of order) {
      const socket: Socket =
        transport === 'tls'
          ? connectTls({ host: a.host, port: a.tlsPort, ...A, minVersion: 'TLSv1.3', checkServerIdentity: expectCloudlet('B') })
          : connectTcp({ host: a.host, port: a.plainPort });
      socket.setNoDelay(true);
      await once(socket, transport === 'tls' ? 'secureConnect' : 'connect');
      await sleep(300);
      const started = process.hrtime.bigint();
      socket.write(header);
      for (let at = 0; at < block.length; at += 64 * 1024) {
        if (!socket.write(block.subarray(at, at + 64 * 1024))) await once(socket, 'drain');
      }
      socket.write(Buffer.from('E'));
      await next(socket);
      socket.write(Buffer.from('C'));
      await next(socket);
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      socket.destroy();
      console.log(JSON.stringify({ round, transport, ms }));
      await sleep(200);
    }
  }
}

const [role, json] = process.argv.slice(2);
(role === 'serve' ? serve(serveArgs.parse(JSON.parse(json!))) : role === 'send' ? send(sendArgs.parse(JSON.parse(json!))) : Promise.reject(new Error(`role must be serve or send, got ${role}`))).catch(
  (err: Error) => {
    console.error(`tls-cost peer ${role}: ${err.stack ?? err.message}`);
    process.exit(2);
  },
);
