import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { Connection } from '@temporalio/client';
import { resolveTemporalCli } from './temporal-cli.js';
import { EDGE_SEARCH_ATTRIBUTES } from '../workflows/definitions.js';

export interface DevServer {
  address: string;
  uiUrl: string;
  pid: number;
  stop(): Promise<void>;
}

/** The CLI's names for the SDK's search attribute types. */
const CLI_TYPE: Record<string, string> = { KEYWORD: 'Keyword', TEXT: 'Text', INT: 'Int', DOUBLE: 'Double', BOOL: 'Bool', DATETIME: 'Datetime', KEYWORD_LIST: 'KeywordList' };

export async function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, host, () => {
      const a = s.address();
      s.close(() => (a && typeof a === 'object' ? resolve(a.port) : reject(new Error('no port'))));
    });
  });
}

export async function portIsFree(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(port, host, () => s.close(() => resolve(true)));
  });
}

/**
 * Starts the Temporal CLI's dev server (server + web UI) with its state in `dbFile`, so workflow
 * histories survive a restart. Resolves once the frontend answers.
 */
export async function startDevServer(opts: {
  dbFile: string;
  port: number;
  uiPort: number;
  /** Address to bind (default 127.0.0.1). */
  ip?: string;
  /** Network namespace to run in, and the address this host reaches it at. */
  netns?: { name: string; addressFromHost: string };
}): Promise<DevServer> {
  const cli = await resolveTemporalCli();
  const ip = opts.ip ?? '127.0.0.1';
  const reachAt = opts.netns?.addressFromHost ?? ip;
  const args = [
    'server', 'start-dev',
    '--ip', ip,
    '--port', String(opts.port),
    '--ui-port', String(opts.uiPort),
    '--db-filename', opts.dbFile,
    '--log-level', 'error',
    // The UI otherwise fetches a news feed from temporal.io: tests and offline sites make no outbound calls.
    '--ui-disable-news-fetch',
    ...EDGE_SEARCH_ATTRIBUTES.flatMap((a) => ['--search-attribute', `${a.name}=${CLI_TYPE[a.type]}`]),
  ];
  // `ip netns exec` execs the command in place: the PID we hold is the server's.
  const child: ChildProcess = opts.netns
    ? spawn('ip', ['netns', 'exec', opts.netns.name, cli, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    : spawn(cli, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const output: string[] = [];
  const keep = (t: Buffer) => {
    output.push(t.toString());
    if (output.length > 100) output.shift();
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  let exited = false;
  child.once('exit', () => (exited = true));
  const address = `${reachAt}:${opts.port}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (exited) throw new Error(`Temporal dev server exited during start-up: ${output.join('').slice(-2000)}`);
    try {
      // The CLI registers the search attributes after its port opens: ready once they are there.
      const conn = await Connection.connect({ address, connectTimeout: 1_000 });
      const reply = await conn.operatorService.listSearchAttributes({ namespace: 'default' }).finally(() => conn.close());
      const registered = Object.keys(reply.customAttributes ?? {});
      if (EDGE_SEARCH_ATTRIBUTES.every((a) => registered.includes(a.name))) break;
      throw new Error(`search attributes not registered yet (has ${registered.join(', ') || 'none'})`);
    } catch {
      if (Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new Error(`Temporal dev server did not answer at ${address} within 60 s: ${output.join('').slice(-2000)}`);
      }
      await sleep(250);
    }
  }
  return {
    address,
    uiUrl: `http://${reachAt}:${opts.uiPort}`,
    pid: child.pid!,
    stop: async () => {
      if (exited) return;
      const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGTERM');
      await Promise.race([gone, sleep(10_000).then(() => child.kill('SIGKILL'))]);
      await gone;
    },
  };
}
