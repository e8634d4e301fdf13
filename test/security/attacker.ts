import { connect as connectTcp, type Socket } from 'node:net';
import { connect } from 'node:tls';
import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import { FrameType } from '../../engine/wire/frames.js';
import { devCloudletTls } from '../../infra/dev-pki.js';
import { helloWith } from '../support/raw-data-client.js';
import { bombBatch } from './bombs.js';

/**
 * The security suite's hostile peer, run as a process of its own inside a cloudlet's network
 * namespace (`ip netns exec … attacker.ts <command> <json>`), so what it sends crosses the
 * shaped WAN to the target like any cloudlet's traffic. Each command prints one JSON line: what
 * it saw. It holds whatever certificates the command names, from the development PKI or
 * another site's; whether the target accepts them is the point.
 */

const target = z.object({ host: z.string(), port: z.number().int().positive(), pkiDir: z.string() });

const commands = {
  /** Three strangers say hello for a real handoff: no certificate, cloudlet A's name from another CA, cloudlet C. */
  peers: target.extend({ handoffId: z.string(), otherSiteDir: z.string() }),
  /** `count` slow connections announcing 16 MiB frames, in three kinds (see `flood`). */
  flood: target.extend({ count: z.number().int().positive() }),
  /** As the source (A's certificate): a hello for `handoffId`, then a batch that inflates far past its declared size. */
  bomb: target.extend({ handoffId: z.string(), codec: z.enum(['zstd', 'xz']) }),
  /** As the source: a hello for `handoffId` that the target takes, then nothing; reports when the target closed it. */
  linger: target.extend({ handoffId: z.string() }),
  /** As the source: a hello and a batch for a handoff that committed. */
  late: target.extend({ handoffId: z.string() }),
  /** `text` in the clear over plain TCP: what a capture must find, the control of one that finds nothing. */
  probe: target.extend({ text: z.string() }),
};

async function peers(a: z.infer<typeof commands.peers>) {
  const B = await devCloudletTls('B', a.pkiDir);
  const C = await devCloudletTls('C', a.pkiDir);
  const foreignA = await devCloudletTls('A', a.otherSiteDir);
  const opts = { host: a.host };
  // The one the target could mistake for the source first, while the handoff surely runs.
  const other = await helloWith(a.port, C, a.handoffId, opts);
  return {
    other,
    bare: await helloWith(a.port, { ca: B.ca }, a.handoffId, opts),
    foreign: await helloWith(a.port, { ...foreignA, ca: B.ca }, a.handoffId, opts),
  };
}

/**
 * Three kinds of slow connection, each announcing a 16 MiB frame and then dribbling a byte every
 * 250 ms: TLS with cloudlet C's certificate (past the handshake, before any hello is taken); plain
 * TCP speaking the data plane's framing (as a client of the old cleartext protocol would); and
 * plain TCP that opens a TLS record and never finishes its ClientHello.
 */
async function flood(a: z.infer<typeof commands.flood>) {
  const C = await devCloudletTls('C', a.pkiDir);
  const announce = Buffer.alloc(5);
  announce.writeUInt32LE(16 << 20, 0);
  announce.writeUInt8(FrameType.Batch, 4);
  const tlsRecord = Buffer.from([0x16, 0x03, 0x01, 0x40, 0x00]);
  const kinds = ['tls-frame', 'plain-frame', 'tls-record'] as const;
  const started = Date.now();
  const results = await Promise.all(
    Array.from({ length: a.count }, async (_, k) => {
      const kind = kinds[k % kinds.length]!;
      const socket: Socket =
        kind === 'tls-frame'
          ? connect({ host: a.host, port: a.port, ...C, checkServerIdentity: () => undefined })
          : connectTcp({ host: a.host, port: a.port });
      let error: string | undefined;
      socket.on('error', (e) => (error ??= e.message));
      const opened = Date.now();
      const closed = new Promise<number>((resolve) => socket.once('close', () => resolve(Date.now())));
      const ready = kind === 'tls-frame' ? 'secureConnect' : 'connect';
      const up = await Promise.race([new Promise<boolean>((r) => socket.once(ready, () => r(true))), closed.then(() => false)]);
      let dribbled = 0;
      if (up) {
        socket.write(kind === 'tls-record' ? tlsRecord : announce);
        const drip = setInterval(() => {
          if (socket.destroyed || !socket.writable) return;
          socket.write(Buffer.from([dribbled++ & 0xff]));
        }, 250);
        socket.once('close', () => clearInterval(drip));
      }
      // Nobody waits longer than 20 s: a connection still open then is what the check catches.
      const closedAt = await Promise.race([closed, sleep(20_000).then(() => null)]);
      if (closedAt === null) socket.destroy();
      return { kind, up, lifetimeMs: closedAt === null ? null : closedAt - opened, dribbled, ...(error ? { error } : {}) };
    }),
  );
  return { startedAt: started, endedAt: Date.now(), connections: results };
}

/**
 * As the source would on a reconnect, with A's certificate: a hello for `handoffId` of the attempt
 * after the one the target serves (learnt from its refusals), followed by `after`. Returns every
 * hello's outcome; the last is the one the target took (or the last refusal).
 */
async function asSource(a: z.infer<typeof target> & { handoffId: string }, after: Buffer[], waitMs: number) {
  const A = await devCloudletTls('A', a.pkiDir);
  const tries: Array<Awaited<ReturnType<typeof helloWith>> & { attempt: number }> = [];
  let attempt = 1;
  for (let k = 0; k < 8; k++) {
    const r = await helloWith(a.port, A, a.handoffId, { host: a.host, attempt, after, waitMs });
    tries.push({ attempt, ...r });
    const served = /superseded by attempt (\d+)/.exec(r.refusal ?? '') ?? /attempt (\d+) of handoff \S+ is already connected/.exec(r.refusal ?? '');
    if (served) attempt = Number(served[1]) + 1;
    else if (/cannot reconcile/.test(r.refusal ?? '')) attempt++;
    else break;
  }
  return tries;
}

/** Takes the handoff over (see asSource), then sends the bomb: one that lands reads as a refusal naming the declared size. */
async function bomb(a: z.infer<typeof commands.bomb>) {
  const { frame, wireBytes, inflatesTo, declared } = await bombBatch(a.codec);
  const tries = await asSource(a, [frame], 10_000);
  return { codec: a.codec, wireBytes, inflatesTo, declared, tries: tries.map((t) => ({ attempt: t.attempt, refusal: t.refusal, error: t.error })) };
}

/** Takes the handoff over (see asSource) and then sends nothing: when does the target let go? */
async function linger(a: z.infer<typeof commands.linger>) {
  const tries = await asSource(a, [], 180_000);
  return { ...tries.at(-1)!, hellos: tries.length };
}

async function late(a: z.infer<typeof commands.late>) {
  const A = await devCloudletTls('A', a.pkiDir);
  const { frame } = await bombBatch('zstd');
  return helloWith(a.port, A, a.handoffId, { host: a.host, attempt: 1_000, after: [frame] });
}

async function probe(a: z.infer<typeof commands.probe>) {
  const socket = connectTcp({ host: a.host, port: a.port });
  socket.on('error', () => undefined);
  await Promise.race([new Promise((r) => socket.once('connect', r)), new Promise((r) => socket.once('close', r))]);
  const sent = socket.write(a.text);
  await sleep(500);
  socket.destroy();
  return { sent };
}

const [name, json] = process.argv.slice(2);
const run = async (): Promise<unknown> => {
  switch (name) {
    case 'peers':
      return peers(commands.peers.parse(JSON.parse(json!)));
    case 'flood':
      return flood(commands.flood.parse(JSON.parse(json!)));
    case 'bomb':
      return bomb(commands.bomb.parse(JSON.parse(json!)));
    case 'linger':
      return linger(commands.linger.parse(JSON.parse(json!)));
    case 'late':
      return late(commands.late.parse(JSON.parse(json!)));
    case 'probe':
      return probe(commands.probe.parse(JSON.parse(json!)));
    default:
      throw new Error(`attacker: unknown command '${name}'; one of ${Object.keys(commands).join(', ')}`);
  }
};
run().then(
  (r) => console.log(JSON.stringify(r)),
  (err: Error) => {
    console.error(`attacker ${name}: ${err.stack ?? err.message}`);
    process.exit(2);
  },
);
