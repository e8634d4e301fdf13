import { parseArgs } from 'node:util';
import { clusterDown, clusterStatus, clusterUp, killNode, startNode, type ClusterStatus } from './cluster.js';

const USAGE = `usage: npm run cluster -- <command> [options]
  up [--tls] [--nodes N] [--base-port P] [--no-ui] [--log-level L] [--json]
                           start (or complete) the cluster; prints how to reach it
  status [--json]          what runs, what serves, the membership rings (exit 1 unless all is up)
  down [--purge] [--json]  stop everything it recorded; --purge deletes its state and database
  kill-node NAME [--signal SIG]   signal one server node (default SIGKILL)
  start-node NAME          start one server node again`;

function printStatus(s: ClusterStatus): void {
  const mark = (serving: boolean, pid?: number) => (serving ? `serving (pid ${pid})` : pid ? `running, not serving (pid ${pid})` : 'down');
  console.log(`cluster ${s.up ? 'up' : 'NOT up'} · server ${s.serverVersion} · UI ${s.uiServerVersion} · frontend TLS ${s.tls ? 'on (mutual)' : 'off'} · ${s.stateDir}`);
  console.log(`  postgres   ${s.postgres.address.padEnd(16)} ${mark(s.postgres.serving, s.postgres.pid)}`);
  for (const n of s.nodes) console.log(`  ${n.name.padEnd(10)} ${n.address.padEnd(16)} ${mark(n.serving, n.pid)}`);
  console.log(`  balancer   ${s.balancer.address.padEnd(16)} ${mark(s.balancer.serving, s.balancer.pid)}`);
  if (s.ui) console.log(`  ui         ${s.ui.address.padEnd(16)} ${mark(s.ui.serving, s.ui.pid)}`);
  if (s.membership) {
    console.log(`  membership as ${s.membership.seenBy} sees it: nodes in every ring: ${s.membership.nodesInRings.join(', ') || 'none'}`);
    for (const [role, members] of Object.entries(s.membership.rings)) console.log(`    ${role.padEnd(9)} ${members.join(' ')}`);
  }
}

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      json: { type: 'boolean' },
      tls: { type: 'boolean' },
      nodes: { type: 'string' },
      'base-port': { type: 'string' },
      'no-ui': { type: 'boolean' },
      'log-level': { type: 'string' },
      purge: { type: 'boolean' },
      signal: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const [command, name] = positionals;
  const say = values.json ? () => undefined : (l: string) => console.log(l);
  const out = (o: unknown) => values.json && console.log(JSON.stringify(o));
  const int = (v: string | undefined, what: string) => {
    if (v === undefined) return undefined;
    if (!/^\d+$/.test(v)) throw new Error(`${what} must be a whole number, not '${v}'`);
    return Number(v);
  };
  switch (command) {
    case 'up': {
      const level = values['log-level'];
      if (level !== undefined && !['debug', 'info', 'warn', 'error'].includes(level)) throw new Error(`--log-level must be debug, info, warn or error`);
      const t = Date.now();
      const info = await clusterUp({
        tls: values.tls,
        nodeCount: int(values.nodes, '--nodes'),
        basePort: int(values['base-port'], '--base-port'),
        ui: !values['no-ui'],
        logLevel: level as 'debug' | 'info' | 'warn' | 'error' | undefined,
        log: (l) => say(`cluster: ${l}`),
      });
      say(`cluster: up in ${((Date.now() - t) / 1000).toFixed(1)} s — clients dial ${info.address} (namespace ${info.namespaces.join(', ')})${info.uiUrl ? `, UI ${info.uiUrl}` : ''}`);
      if (info.tls) say(`cluster: mutual TLS — CA ${info.tls.caFile}, a client certificate from that CA (e.g. ${info.tls.certFile}), server name ${info.tls.serverName}`);
      out(info);
      return 0;
    }
    case 'status': {
      const s = await clusterStatus();
      if (values.json) out(s);
      else printStatus(s);
      return s.up ? 0 : 1;
    }
    case 'down': {
      const stopped = await clusterDown({ purge: values.purge, log: (l) => say(`cluster: ${l}`) });
      if (!stopped.length) say('cluster: nothing was running');
      out({ stopped, purged: values.purge ?? false });
      return 0;
    }
    case 'kill-node': {
      if (!name) throw new Error('kill-node needs a node name (node-a, node-b, …)');
      const signal = (values.signal ?? 'SIGKILL') as NodeJS.Signals;
      const pid = await killNode(name, signal);
      say(`cluster: ${name} (pid ${pid}) ended by ${signal}`);
      out({ node: name, pid, signal });
      return 0;
    }
    case 'start-node': {
      if (!name) throw new Error('start-node needs a node name (node-a, node-b, …)');
      const info = await startNode(name);
      say(`cluster: ${name} serving at ${info.frontendAddress} (pid ${info.pid}), in every ring`);
      out(info);
      return 0;
    }
    default:
      console.error(USAGE);
      return values.help ? 0 : 2;
  }
}

main().then(
  (code) => process.exit(code),
  (err: Error) => {
    console.error(`cluster: ${err.message}`);
    process.exit(1);
  },
);
