import { connect, createServer, type Server, type Socket } from 'node:net';
import { parseArgs } from 'node:util';

/**
 * A TCP relay: each connection accepted is piped to `upstream`, bytes untouched (TLS passes
 * through and ends at the server), with backpressure; either side's end or error ends both.
 * `close()` also ends the connections still open, so a relay stops at once.
 */
export interface TcpRelay {
  server: Server;
  close(): Promise<void>;
}

export function tcpRelay(upstream: { host: string; port: number }): TcpRelay {
  const open = new Set<Socket>();
  const server = createServer({ noDelay: true }, (client) => {
    const up = connect({ ...upstream, noDelay: true });
    const end = () => {
      client.destroy();
      up.destroy();
      open.delete(client);
      open.delete(up);
    };
    for (const s of [client, up]) {
      open.add(s);
      s.on('error', end);
      s.on('close', end);
    }
    client.pipe(up);
    up.pipe(client);
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

export function hostPort(s: string): { host: string; port: number } {
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
