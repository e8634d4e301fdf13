import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { access, constants } from 'node:fs/promises';
import { promisify } from 'node:util';
import { DELAY_RELAY_BIN, PREFIX } from './paths.js';

const run = promisify(execFile);

/**
 * A WAN on one host: a core namespace (the Temporal server, and the router between cloudlets)
 * and one namespace per cloudlet, each joined to the core by a link shaped with `tbf` on both
 * ends — the cloudlet's uplink and downlink. Cloudlet-to-cloudlet traffic crosses the source's
 * uplink and the target's downlink; worker-to-Temporal traffic crosses the cloudlet's link too.
 * The host reaches the core through one unshaped veth (for clients and the web UI).
 *
 * Delay: this kernel has neither netem nor fq, so with `rttMs` each link gets a namespace of its
 * own in the middle, where a packet relay (infra/wan-delay/delay-relay.c) passes every frame on
 * rttMs / 4 later in each direction: cloudlet to cloudlet crosses two links each way, so their
 * round trip gains rttMs, and a worker's to Temporal rttMs / 2. The relay sits after the `tbf`s,
 * so it delays without changing the rate. Without `rttMs` the links are plain veth pairs.
 */
export interface WanTestbed {
  tag: string;
  coreNs: string;
  /** The core's address as the host sees it (clients, UI). */
  coreAddressFromHost: string;
  /** The host's end of the host ↔ core link, as the core reaches it (a relay to a server on the host listens there). */
  hostAddress: string;
  mbps: number;
  /** Round trip added between two cloudlets (0: none). */
  rttMs: number;
  /** `dev`: the cloudlet's end of its link, inside `ns` (where a capture of its WAN traffic listens). */
  cloudlet(name: string): { ns: string; address: string; coreAddress: string; dev: string };
  setRate(mbps: number): Promise<void>;
  /** Bytes the cloudlet's uplink has sent so far (its tbf's counter): what crossed the WAN. */
  uplinkBytes(name: string): Promise<number>;
  /**
   * Cuts the cloudlet's link (`true`) or restores it: its core-side end goes down, so nothing
   * crosses either way and no peer is told (no RST) — the data plane and Temporal both go silent.
   */
  blackout(name: string, cut: boolean): Promise<void>;
  /** What it made that outlives a crashed owner: its namespaces, its host-side link, its relays' PIDs. */
  leftovers(): { namespaces: string[]; hostLinks: string[]; relayPids: number[] };
  destroy(): Promise<void>;
}

/** Inside the core and cloudlet namespaces only: never routed on the host. */
const SUBNET = '10.213';

async function ip(...args: string[]): Promise<void> {
  await run('ip', args);
}

async function nsRun(ns: string, ...cmd: string[]): Promise<void> {
  await run('ip', ['netns', 'exec', ns, ...cmd]);
}

/** tbf: a token bucket at `mbps`; the queue holds at most ~100 ms so RTT stays sane. */
async function shape(ns: string, dev: string, mbps: number, verb: 'replace' | 'change'): Promise<void> {
  const burstBytes = Math.max(16 * 1024, Math.round((mbps * 1e6) / 8 / 100));
  await nsRun(ns, 'tc', 'qdisc', verb, 'dev', dev, 'root', 'tbf', 'rate', `${mbps}mbit`, 'burst', String(burstBytes), 'latency', '100ms');
}

/** Frames must cross the relay whole, checksummed and unsegmented (see delay-relay.c). */
async function noOffloads(ns: string, dev: string): Promise<void> {
  await nsRun(ns, 'ethtool', '-K', dev, 'tx', 'off', 'tso', 'off', 'gso', 'off', 'gro', 'off');
}

/** Starts the relay between two interfaces of `ns`; resolves once it runs (or fails naming why). */
async function startRelay(ns: string, a: string, b: string, oneWayUs: number): Promise<ChildProcess> {
  const child = spawn('ip', ['netns', 'exec', ns, DELAY_RELAY_BIN, a, b, String(oneWayUs)], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (t: string) => (stderr = (stderr + t).slice(-4000)));
  await new Promise<void>((resolve, reject) => {
    const early = (code: number | null) => reject(new Error(`delay relay in ${ns} exited (code ${code}): ${stderr.trim()}`));
    child.once('exit', early);
    child.once('error', reject);
    // It prints one line once both ports are open.
    child.stderr!.once('data', () => {
      child.off('exit', early);
      resolve();
    });
  });
  return child;
}

async function stopRelay(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  await Promise.race([exited, new Promise((r) => setTimeout(r, 3_000))]);
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
}

export async function createWanTestbed(opts: { tag: string; cloudlets: string[]; mbps: number; rttMs?: number }): Promise<WanTestbed> {
  if (!/^[a-z0-9]{1,6}$/.test(opts.tag)) throw new Error(`testbed tag '${opts.tag}' must be 1-6 lowercase letters or digits (interface names are short)`);
  if (opts.cloudlets.length > 200) throw new Error('at most 200 cloudlets in one testbed');
  const rttMs = opts.rttMs ?? 0;
  if (!(rttMs >= 0 && rttMs <= 2_000)) throw new Error(`round trip ${opts.rttMs} ms: give 0 to 2000 ms`);
  if (rttMs > 0) {
    await access(DELAY_RELAY_BIN, constants.X_OK).catch(() => {
      throw new Error(`a ${rttMs} ms round trip needs the delay relay ${DELAY_RELAY_BIN}: run 'bash infra/setup.sh' to build it`);
    });
  }
  const tag = opts.tag;
  const coreNs = `${PREFIX}-${tag}-core`;
  const hostNet = `10.214.${parseInt(tag, 36) % 250}`;
  const created: Array<() => Promise<void>> = [];
  const links = new Map<string, { ns: string; address: string; coreAddress: string; dev: string; coreDev: string }>();
  let mbps = opts.mbps;
  const namespaces: string[] = [];
  const hostLinks: string[] = [];
  const relayPids: number[] = [];
  const destroy = async () => {
    for (const undo of created.reverse()) await undo().catch(() => undefined);
  };
  try {
    await ip('netns', 'add', coreNs);
    namespaces.push(coreNs);
    created.push(() => ip('netns', 'del', coreNs));
    await nsRun(coreNs, 'ip', 'link', 'set', 'lo', 'up');
    await nsRun(coreNs, 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=1');

    // Host ↔ core, unshaped: the operator's view, not part of the WAN. Its subnet is the only
    // one the host sees, so it is the testbed's own: two testbeds can run side by side.
    const hostDev = `eh${tag}h`;
    const hostPeer = `eh${tag}hc`;
    await ip('link', 'add', hostDev, 'type', 'veth', 'peer', 'name', hostPeer);
    hostLinks.push(hostDev);
    created.push(() => ip('link', 'del', hostDev));
    await ip('link', 'set', hostPeer, 'netns', coreNs);
    await ip('addr', 'add', `${hostNet}.1/24`, 'dev', hostDev);
    await ip('link', 'set', hostDev, 'up');
    await nsRun(coreNs, 'ip', 'addr', 'add', `${hostNet}.2/24`, 'dev', hostPeer);
    await nsRun(coreNs, 'ip', 'link', 'set', hostPeer, 'up');

    for (const [k, name] of opts.cloudlets.entries()) {
      const ns = `${PREFIX}-${tag}-${name}`;
      const net = `${SUBNET}.${k + 1}`;
      const dev = `eh${tag}${k}a`;
      const coreDev = `eh${tag}${k}c`;
      await ip('netns', 'add', ns);
      namespaces.push(ns);
      created.push(() => ip('netns', 'del', ns));
      await nsRun(ns, 'ip', 'link', 'set', 'lo', 'up');
      // A cloudlet's data plane is one long-lived connection that goes quiet while the source
      // scans a paused VM, then must send at once: a host that moves VMs keeps its congestion
      // window across such pauses instead of restarting slow start (RFC 2861's default).
      await nsRun(ns, 'sysctl', '-q', '-w', 'net.ipv4.tcp_slow_start_after_idle=0');
      if (rttMs > 0) {
        // cloudlet ─veth─ [x relay y] ─veth─ core, the relay in a namespace of the link's own.
        const linkNs = `${ns}-wan`;
        const [x, y] = [`eh${tag}${k}x`, `eh${tag}${k}y`];
        await ip('netns', 'add', linkNs);
        namespaces.push(linkNs);
        created.push(() => ip('netns', 'del', linkNs));
        await ip('link', 'add', dev, 'netns', ns, 'type', 'veth', 'peer', 'name', x, 'netns', linkNs);
        await ip('link', 'add', y, 'netns', linkNs, 'type', 'veth', 'peer', 'name', coreDev, 'netns', coreNs);
        for (const [n, d] of [[ns, dev], [linkNs, x], [linkNs, y], [coreNs, coreDev]] as const) await noOffloads(n, d);
        await nsRun(linkNs, 'ip', 'link', 'set', x, 'up');
        await nsRun(linkNs, 'ip', 'link', 'set', y, 'up');
        const relay = await startRelay(linkNs, x, y, Math.round((rttMs / 4) * 1000));
        relayPids.push(relay.pid!);
        created.push(() => stopRelay(relay));
      } else {
        await ip('link', 'add', dev, 'netns', ns, 'type', 'veth', 'peer', 'name', coreDev, 'netns', coreNs);
      }
      await nsRun(ns, 'ip', 'addr', 'add', `${net}.2/24`, 'dev', dev);
      await nsRun(ns, 'ip', 'link', 'set', dev, 'up');
      await nsRun(ns, 'ip', 'route', 'add', 'default', 'via', `${net}.1`);
      await nsRun(coreNs, 'ip', 'addr', 'add', `${net}.1/24`, 'dev', coreDev);
      await nsRun(coreNs, 'ip', 'link', 'set', coreDev, 'up');
      await shape(ns, dev, mbps, 'replace');
      await shape(coreNs, coreDev, mbps, 'replace');
      links.set(name, { ns, address: `${net}.2`, coreAddress: `${net}.1`, dev, coreDev });
    }
  } catch (err) {
    await destroy();
    throw new Error(`cannot build the WAN testbed: ${(err as { stderr?: string }).stderr?.trim() || (err as Error).message}`);
  }
  return {
    tag,
    coreNs,
    coreAddressFromHost: `${hostNet}.2`,
    hostAddress: `${hostNet}.1`,
    rttMs,
    get mbps() {
      return mbps;
    },
    cloudlet(name) {
      const l = links.get(name);
      if (!l) throw new Error(`no cloudlet '${name}' in testbed ${tag}`);
      return { ns: l.ns, address: l.address, coreAddress: l.coreAddress, dev: l.dev };
    },
    async setRate(next) {
      for (const l of links.values()) {
        await shape(l.ns, l.dev, next, 'change');
        await shape(coreNs, l.coreDev, next, 'change');
      }
      mbps = next;
    },
    leftovers: () => ({ namespaces: [...namespaces], hostLinks: [...hostLinks], relayPids: [...relayPids] }),
    async blackout(name, cut) {
      const l = links.get(name);
      if (!l) throw new Error(`no cloudlet '${name}' in testbed ${tag}`);
      await nsRun(coreNs, 'ip', 'link', 'set', l.coreDev, cut ? 'down' : 'up');
    },
    async uplinkBytes(name) {
      const l = links.get(name);
      if (!l) throw new Error(`no cloudlet '${name}' in testbed ${tag}`);
      const { stdout } = await run('ip', ['netns', 'exec', l.ns, 'tc', '-s', 'qdisc', 'show', 'dev', l.dev]);
      const sent = /Sent (\d+) bytes/.exec(stdout);
      if (!sent) throw new Error(`no byte counter in tc output for ${l.dev}: ${stdout.slice(0, 200)}`);
      return Number(sent[1]);
    },
    destroy,
  };
}
