import { parseArgs } from 'node:util';
import { hostPort, tcpRelay } from '../tcp-relay.js';

/**
 * A TCP balancer in front of the cluster's frontends: the one address workers and clients dial,
 * as a load balancer (or a Kubernetes Service) is in a real deployment. Each connection goes to
 * the next frontend in turn; one that refuses or does not connect within a second is skipped,
 * so when a node dies, clients that reconnect land on a live one. Bytes pass through untouched
 * (TLS ends at the frontend, whose certificate names 127.0.0.1). The relaying is tcp-relay.ts's.
 *   node --import tsx frontend-balancer.ts --name ehoff-frontend-balancer --listen 127.0.0.1:P --backend 127.0.0.1:P1 --backend …
 */
function main(): void {
  const { values } = parseArgs({ options: { name: { type: 'string' }, listen: { type: 'string' }, backend: { type: 'string', multiple: true } } });
  if (!values.listen || !values.backend?.length) {
    console.error('usage: frontend-balancer.ts --listen HOST:PORT --backend HOST:PORT [--backend …]');
    process.exit(2);
  }
  const relay = tcpRelay(values.backend.map(hostPort), {
    onNoUpstream: () => console.error(`${new Date().toISOString()} no frontend answers; connection refused`),
  });
  const l = hostPort(values.listen);
  relay.server.listen(l.port, l.host, () => console.error(`${new Date().toISOString()} ${values.name ?? 'balancer'} on ${values.listen} → ${values.backend!.join(', ')}`));
  const stop = () => {
    setTimeout(() => process.exit(0), 1_000).unref();
    void relay.close().then(() => process.exit(0));
  };
  for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, stop);
}

main();
