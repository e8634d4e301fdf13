import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { PREFIX } from './paths.js';

const run = promisify(execFile);

/**
 * A WAN on one host: a core namespace (the Temporal server, and the router between cloudlets)
 * and one namespace per cloudlet, each joined to the core by a veth pair shaped with `tbf` on
 * both ends — the cloudlet's uplink and downlink. Cloudlet-to-cloudlet traffic crosses the
 * source's uplink and the target's downlink; worker-to-Temporal traffic crosses the cloudlet's
 * link too. The host reaches the core through one unshaped veth (for clients and the web UI).
 * This kernel has no netem: the link has a rate but no added delay.
 */
export interface WanTestbed {
  tag: string;
  coreNs: string;
  /** The core's address as the host sees it (clients, UI). */
  coreAddressFromHost: string;
  mbps: number;
  cloudlet(name: string): { ns: string; address: string; coreAddress: string };
  setRate(mbps: number): Promise<void>;
  /** Bytes the cloudlet's uplink has sent so far (its tbf's counter): what crossed the WAN. */
  uplinkBytes(name: string): Promise<number>;
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

export async function createWanTestbed(opts: { tag: string; cloudlets: string[]; mbps: number }): Promise<WanTestbed> {
  if (!/^[a-z0-9]{1,6}$/.test(opts.tag)) throw new Error(`testbed tag '${opts.tag}' must be 1-6 lowercase letters or digits (interface names are short)`);
  if (opts.cloudlets.length > 200) throw new Error('at most 200 cloudlets in one testbed');
  const tag = opts.tag;
  const coreNs = `${PREFIX}-${tag}-core`;
  const hostNet = `10.214.${parseInt(tag, 36) % 250}`;
  const created: Array<() => Promise<void>> = [];
  const links = new Map<string, { ns: string; address: string; coreAddress: string; dev: string; coreDev: string }>();
  let mbps = opts.mbps;
  const destroy = async () => {
    for (const undo of created.reverse()) await undo().catch(() => undefined);
  };
  try {
    await ip('netns', 'add', coreNs);
    created.push(() => ip('netns', 'del', coreNs));
    await nsRun(coreNs, 'ip', 'link', 'set', 'lo', 'up');
    await nsRun(coreNs, 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=1');

    // Host ↔ core, unshaped: the operator's view, not part of the WAN. Its subnet is the only
    // one the host sees, so it is the testbed's own: two testbeds can run side by side.
    const hostDev = `eh${tag}h`;
    const hostPeer = `eh${tag}hc`;
    await ip('link', 'add', hostDev, 'type', 'veth', 'peer', 'name', hostPeer);
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
      created.push(() => ip('netns', 'del', ns));
      await nsRun(ns, 'ip', 'link', 'set', 'lo', 'up');
      await ip('link', 'add', dev, 'netns', ns, 'type', 'veth', 'peer', 'name', coreDev, 'netns', coreNs);
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
    get mbps() {
      return mbps;
    },
    cloudlet(name) {
      const l = links.get(name);
      if (!l) throw new Error(`no cloudlet '${name}' in testbed ${tag}`);
      return { ns: l.ns, address: l.address, coreAddress: l.coreAddress };
    },
    async setRate(next) {
      for (const l of links.values()) {
        await shape(l.ns, l.dev, next, 'change');
        await shape(coreNs, l.coreDev, next, 'change');
      }
      mbps = next;
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
