import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdir, readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** A packet capture running in a namespace, on one interface (tcpdump from Debian). */
export interface Capture {
  file: string;
  /** Stops tcpdump (by its PID) and says how many packets it took and the kernel dropped. */
  stop(): Promise<{ packets: number; dropped: number }>;
}

export async function startCapture(ns: string, dev: string, file: string): Promise<Capture> {
  // -U: written as it arrives; -s 0: whole packets; -Z root: no privilege drop that cannot write the file.
  const child: ChildProcess = spawn('ip', ['netns', 'exec', ns, 'tcpdump', '-i', dev, '-s', '0', '-U', '-B', '16384', '-Z', 'root', '-w', file, 'tcp'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (t: string) => (stderr += t));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`tcpdump in ${ns} did not start listening: ${stderr}`)), 10_000);
    child.stderr!.on('data', () => {
      if (!/listening on/.test(stderr)) return;
      clearTimeout(timer);
      resolve();
    });
    void exited.then(() => reject(new Error(`tcpdump in ${ns} exited: ${stderr.trim()}`)));
  });
  return {
    file,
    async stop() {
      // `ip netns exec` execs tcpdump in place: this PID is tcpdump's.
      child.kill('SIGINT');
      await exited;
      const packets = Number(/(\d+) packets? captured/.exec(stderr)?.[1] ?? NaN);
      const dropped = Number(/(\d+) packets? dropped by kernel/.exec(stderr)?.[1] ?? NaN);
      if (!Number.isFinite(packets)) throw new Error(`tcpdump gave no packet count: ${stderr.trim()}`);
      return { packets, dropped };
    },
  };
}

/** One direction of one TCP connection, reassembled: who sent it to whom, and its bytes in order. */
export interface Flow {
  from: { address: string; port: number };
  to: { address: string; port: number };
  data: Buffer;
}

/**
 * The capture's TCP streams put back together in sequence order (tcpflow from Debian: it
 * handles reordering and retransmission, so a string split across segments is found whole).
 */
export async function reassemble(pcap: string, outDir: string): Promise<Flow[]> {
  await mkdir(outDir, { recursive: true });
  await run('tcpflow', ['-r', pcap, '-o', outDir]).catch((err: { stderr?: string; message: string }) => {
    throw new Error(`tcpflow cannot read ${pcap}: ${err.stderr?.trim() || err.message}`);
  });
  const flows: Flow[] = [];
  // Names read 010.213.001.002.40212-010.213.002.002.07300 (a 4-tuple seen again gets c1, c2, …).
  const walk = async (dir: string): Promise<void> => {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) await walk(path);
      const m = /^(\d{3}\.\d{3}\.\d{3}\.\d{3})\.(\d{5})-(\d{3}\.\d{3}\.\d{3}\.\d{3})\.(\d{5})(c\d+)?$/.exec(entry.name);
      if (!entry.isFile() || !m) continue;
      const address = (a: string) => a.split('.').map(Number).join('.');
      flows.push({ from: { address: address(m[1]!), port: Number(m[2]) }, to: { address: address(m[3]!), port: Number(m[4]) }, data: await readFile(path) });
    }
  };
  await walk(outDir);
  return flows;
}
