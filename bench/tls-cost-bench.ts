import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { ensureDevPki } from '../infra/dev-pki.js';
import { DEV_PKI_DIR, PREFIX, REPO_ROOT } from '../infra/paths.js';
import { createWanTestbed, type WanTestbed } from '../infra/wan-testbed.js';

const run = promisify(execFile);

/**
 * npm run bench:tls-cost [-- --rounds 20] [-- --mbps 10] [-- --rtt-ms 50] [-- --block-mib 2] [-- --json]
 *
 * What mutual TLS costs a handoff's pause, measured apart from the guest's noise: on the WAN
 * testbed (A → B, shaped, with the round trip), the stop phase of the data plane — a final epoch
 * of `block-mib` of incompressible bytes, the end frame, its ack, the commit and its answer —
 * over plain TCP and over TLS 1.3 with both certificates (the data plane's settings), in
 * alternating turns, each connection made beforehand as the data plane's is during the live
 * phase. Prints both, the paired difference with a 95% interval, and the bytes each put on A's
 * uplink; with --json the last line is the summary.
 */
const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '20' },
    mbps: { type: 'string', default: '10' },
    'rtt-ms': { type: 'string', default: '50' },
    'block-mib': { type: 'string', default: '2' },
    json: { type: 'boolean', default: false },
  },
});

const TAG = 'tlsb';
const log = (l: string) => (values.json ? console.error(l) : console.log(l));

/** A crashed run's testbed: its namespaces (and whatever runs in them, its relays) and host link. */
async function sweep(): Promise<void> {
  const { stdout } = await run('ip', ['netns', 'list']);
  for (const ns of stdout.split('\n').map((l) => l.split(' ')[0]!).filter((n) => n.startsWith(`${PREFIX}-${TAG}-`))) {
    const pids = (await run('ip', ['netns', 'pids', ns]).catch(() => ({ stdout: '' }))).stdout.split('\n').filter(Boolean).map(Number);
    for (const pid of pids) process.kill(pid, 'SIGKILL');
    await run('ip', ['netns', 'del', ns]).catch(() => undefined);
  }
  await run('ip', ['link', 'del', `eh${TAG}h`]).catch(() => undefined);
}

function peer(ns: string, role: 'serve' | 'send', args: object): ChildProcess {
  return spawn('ip', ['netns', 'exec', ns, process.execPath, '--import', 'tsx', join(REPO_ROOT, 'bench', 'tls-cost', 'peer.ts'), role, JSON.stringify(args)], {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

async function main(): Promise<void> {
  const rounds = Number(values.rounds);
  const mbps = Number(values.mbps);
  const blockBytes = Math.round(Number(values['block-mib']) * (1 << 20));
  await ensureDevPki(DEV_PKI_DIR, ['A', 'B']);
  await sweep();
  const wan: WanTestbed = await createWanTestbed({ tag: TAG, cloudlets: ['A', 'B'], mbps, rttMs: Number(values['rtt-ms']) });
  const children: ChildProcess[] = [];
  try {
    const B = wan.cloudlet('B');
    const ports = { host: B.address, plainPort: 7400, tlsPort: 7401, pkiDir: DEV_PKI_DIR };
    const server = peer(B.ns, 'serve', ports);
    children.push(server);
    await new Promise<void>((resolve, reject) => {
      createInterface({ input: server.stdout! }).on('line', (l) => l === 'LISTENING' && resolve());
      server.once('exit', (code) => reject(new Error(`the serving peer exited (code ${code})`)));
    });
    log(`TLS cost of the stop phase: ${values['block-mib']} MiB final epoch, end/ack, commit/committed; A → B at ${mbps} Mbit/s, ${wan.rttMs} ms round trip; ${rounds} rounds`);
    const before = await wan.uplinkBytes('A');
    const sender = peer(wan.cloudlet('A').ns, 'send', { ...ports, rounds, blockBytes });
    children.push(sender);
    const samples: Array<{ round: number; transport: 'plain' | 'tls'; ms: number }> = [];
    const uplink: Record<'plain' | 'tls', number> = { plain: 0, tls: 0 };
    let last = before;
    for await (const line of createInterface({ input: sender.stdout! })) {
      const s = JSON.parse(line) as (typeof samples)[number];
      const now = await wan.uplinkBytes('A');
      uplink[s.transport] += now - last;
      last = now;
      samples.push(s);
      log(`  round ${s.round} ${s.transport.padEnd(5)} ${s.ms.toFixed(1)} ms`);
    }
    if (samples.length !== rounds * 2) throw new Error(`the sending peer gave ${samples.length} of ${rounds * 2} samples`);
    const of = (t: 'plain' | 'tls') => samples.filter((s) => s.transport === t).map((s) => s.ms);
    const diffs = Array.from({ length: rounds }, (_, r) => samples.find((s) => s.round === r && s.transport === 'tls')!.ms - samples.find((s) => s.round === r && s.transport === 'plain')!.ms);
    const sd = Math.sqrt(diffs.reduce((a, d) => a + (d - mean(diffs)) ** 2, 0) / (diffs.length - 1));
    const half = (1.96 * sd) / Math.sqrt(diffs.length);
    const summary = {
      blockBytes, mbps, rttMs: wan.rttMs, rounds,
      plainMs: { mean: mean(of('plain')), median: median(of('plain')) },
      tlsMs: { mean: mean(of('tls')), median: median(of('tls')) },
      tlsMinusPlainMs: { mean: mean(diffs), ci95: [mean(diffs) - half, mean(diffs) + half] },
      ratio: mean(of('tls')) / mean(of('plain')),
      uplinkBytesPerRound: { plain: uplink.plain / rounds, tls: uplink.tls / rounds },
    };
    log(`plain ${summary.plainMs.mean.toFixed(1)} ms (median ${summary.plainMs.median.toFixed(1)}), TLS ${summary.tlsMs.mean.toFixed(1)} ms (median ${summary.tlsMs.median.toFixed(1)}): ` +
      `TLS − plain ${summary.tlsMinusPlainMs.mean.toFixed(1)} ms (95% ${summary.tlsMinusPlainMs.ci95.map((x) => x.toFixed(1)).join(' … ')}), ratio ${summary.ratio.toFixed(3)}; ` +
      `on the wire per round ${(summary.uplinkBytesPerRound.plain / 1e6).toFixed(3)} MB plain, ${(summary.uplinkBytesPerRound.tls / 1e6).toFixed(3)} MB TLS (handshake included)`);
    if (values.json) console.log(JSON.stringify(summary));
  } finally {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await wan.destroy();
  }
}

main().catch((err) => {
  console.error(`tls-cost bench: ${err instanceof Error ? err.stack : String(err)}`);
  process.exit(1);
});
