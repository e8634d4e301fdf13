import { connect, createServer, type Server, type Socket } from 'node:net';
import { parseArgs } from 'node:util';

/**
 * A TCP relay: each connection accepted is piped to an upstream, bytes untouched (TLS passes
 * through and ends at the server), with backpressure; either side's end or error ends both.
 * Given several upstreams it balances: each connection goes to the next in turn, and one that
 * refuses or does not connect within a second is skipped (the cluster's frontend balancer).
 * `close()` also ends the connections still open, so a relay stops at once.
 */
export interface TcpRelay {
  server: Server;
  close(): Promise<void>;
}

export type HostPort = { host: string; port: number };

const CONNECT_TIMEOUT_MS = 1_000;

export function tcpRelay(upstreams: HostPort | HostPort[], opts: { onNoUpstream?: () => void } = {}): TcpRelay {
  const targets = Array.isArray(upstreams) ? upstreams : [upstreams];
  const open = new Set<Socket>();
  let next = 0;
  const server = createServer({ noDelay: true }, async (client) => {
    client.pause();
    open.add(client);
    client.on('error', () => client.destroy());
    client.on('close', () => open.delete(client));
    const first = next++ % targets.length;
    for (let i = 0; i < targets.length; i++) {
      const up = await dial(targets[(first + i) % targets.length]!).catch(() => undefined);
      if (!up) continue;
      if (client.destroyed) return void up.destroy();
      open.add(up);
      const end = () => {
        client.destroy();
        up.destroy();
        open.delete(up);
      };
      up.on('error', end);
      up.on('close', end);
      client.on('close', end);
      client.pipe(up);
      up.pipe(client);
      client.resume();
      return;
    }
    opts.onNoUpstream?.();
    client.destroy();
  });
  return {
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of open) s.destroy();
      }),
  };
}

function dial(target: HostPort): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ ...target, noDelay: true });
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

export function hostPort(s: string): HostPort {
  const i = s.lastIndexOf(':');
  const port = Number(s.slice(i + 1));
  if (i < 1 || !Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`not host:port: ${s}`);
  return { host: s.slice(0, i), port };
}

/**
 *   node --import tsx infra/tcp-relay.ts --listen HOST:PORT --to HOST:PORT
 * Prints one line once it listens; ends when its stdin closes (its owner died or let go) or on
 * SIGTERM, so a relay started inside a network namespace never outlives the run that made it.
 */
function main(): void {
  const { values } = parseArgs({ options: { listen: { type: 'string' }, to: { type: 'string' } } });
  if (!values.listen || !values.to) {
    console.error('usage: tcp-relay.ts --listen HOST:PORT --to HOST:PORT');
    process.exit(2);
  }
  const relay = tcpRelay(hostPort(values.to));
  const listen = hostPort(values.listen);
  const stop = () => void relay.close().then(() => process.exit(0));
  relay.server.on('error', (err) => {
    console.error(`tcp relay on ${values.listen}: ${err.message}`);
    process.exit(1);
  });
  relay.server.listen(listen.port, listen.host, () => console.log(`relaying ${values.listen} → ${values.to}`));
  process.stdin.on('end', stop).on('close', stop).resume();
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

if (import.meta.url === `file://${process.argv[1]}`) main();
