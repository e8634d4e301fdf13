import { connect, createServer, type Socket } from 'node:net';
import { parseArgs } from 'node:util';

/**
 * A TCP balancer in front of the cluster's frontends: the one address workers and clients dial,
 * as a load balancer (or a Kubernetes Service) is in a real deployment. Each connection goes to
 * the next frontend in turn; one that refuses or does not connect within a second is skipped,
 * so when a node dies, clients that reconnect land on a live one. Bytes pass through untouched
 * (TLS ends at the frontend, whose certificate names 127.0.0.1).
 *   node --import tsx frontend-balancer.ts --name ehoff-frontend-balancer --listen 127.0.0.1:P --backend 127.0.0.1:P1 --backend …
 */

const CONNECT_TIMEOUT_MS = 1_000;

function hostPort(s: string): { host: string; port: number } {
  const i = s.lastIndexOf(':');
  const port = Number(s.slice(i + 1));
  if (i < 1 || !Number.isInteger(port)) throw new Error(`not host:port: ${s}`);
  return { host: s.slice(0, i), port };
}

function dial(backend: { host: string; port: number }): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect(backend);
    const timer = setTimeout(() => s.destroy(new Error('connect timeout')), CONNECT_TIMEOUT_MS);
    s.once('connect', () => {
      clearTimeout(timer);
      s.removeAllListeners('error');
      resolve(s);
    });
    s.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

function main(): void {
  const { values } = parseArgs({ options: { name: { type: 'string' }, listen: { type: 'string' }, backend: { type: 'string', multiple: true } } });
  if (!values.listen || !values.backend?.length) {
    console.error('usage: frontend-balancer.ts --listen HOST:PORT --backend HOST:PORT [--backend …]');
    process.exit(2);
  }
  const backends = values.backend.map(hostPort);
  let next = 0;
  const server = createServer({ noDelay: true }, async (client) => {
    client.pause();
    client.on('error', () => client.destroy());
    const start = next++ % backends.length;
    for (let i = 0; i < backends.length; i++) {
      const b = backends[(start + i) % backends.length]!;
      const upstream = await dial(b).catch(() => undefined);
      if (!upstream) continue;
      if (client.destroyed) return void upstream.destroy();
      upstream.setNoDelay(true);
      upstream.on('error', () => client.destroy());
      upstream.on('close', () => client.destroy());
      client.on('close', () => upstream.destroy());
      client.pipe(upstream);
      upstream.pipe(client);
      client.resume();
      return;
    }
    console.error(`${new Date().toISOString()} no frontend answers; connection refused`);
    client.destroy();
  });
  const l = hostPort(values.listen);
  server.listen(l.port, l.host, () => console.error(`${new Date().toISOString()} ${values.name ?? 'balancer'} on ${values.listen} → ${values.backend!.join(', ')}`));
  for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => server.close(() => process.exit(0)) && setTimeout(() => process.exit(0), 1_000).unref());
}

main();
