import { spawn, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';
import { z } from 'zod';
import { BLOCK_SIZE } from '../blocks.js';
import { HandoffError } from '../errors.js';
import { ramMappings } from '../memory/dirty-log.js';
import { writeWithBackpressure } from '../wire/write-with-backpressure.js';

/** The post-copy fault server in C and the RAM file's holes (native/dirty-log), built by `npm ci`. */
interface NativePostCopy {
  pipeFaultServer: string;
  ramHoles: {
    punchHoles(fd: number, runs: Uint32Array): void;
    holes(fd: number, pages: number): Uint32Array;
  };
}

export function nativePostCopy(): NativePostCopy {
  return createRequire(import.meta.url)('ehoff-dirty-log') as NativePostCopy;
}

const reportSchema = z.object({ faults: z.number(), copied: z.number(), already: z.number(), pages: z.number() });
export type FaultServerReport = z.infer<typeof reportSchema>;

/**
 * The target QEMU's missing-page faults, served by native/dirty-log/uffd_pipe_serve.c: it
 * registers QEMU's mapping of the RAM file (whose holes are the pages still to come), reports
 * each page a fault waits on, and puts in the pages handed to it. Start it before QEMU touches
 * its RAM (before the device state loads). It ends once told no more pages come and no hole is
 * left; if it dies before, QEMU's registration stays and a touch of a hole waits until another
 * server takes the same userfaultfd up.
 */
export class FaultServer {
  private stderr = '';
  /** Resolves with the server's exit code once it ended, for whatever reason. */
  readonly exited: Promise<number | null>;
  /** The server's last line, its report, once it ended. */
  private readonly reported: Promise<string | undefined>;

  private constructor(private readonly child: ChildProcess, onFault: (page: number) => void, serving: (line: string) => void) {
    child.stderr!.on('data', (d: Buffer) => (this.stderr = (this.stderr + d.toString()).slice(-2000)));
    child.stdin!.on('error', () => undefined);
    this.exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
    let first = true;
    let last: string | undefined;
    const lines = createInterface({ input: child.stdout! });
    lines.on('line', (line) => {
      if (first) return ((first = false), serving(line));
      if (line.startsWith('F ')) onFault(Number(line.slice(2)));
      else last = line;
    });
    this.reported = new Promise((resolve) => lines.once('close', () => resolve(last)));
  }

  /** Registers QEMU `qemuPid`'s mapping of `ramFile` for missing pages; `onFault` hears of each page a fault waits on. */
  static async start(qemuPid: number, ramFile: string, onFault: (page: number) => void): Promise<FaultServer> {
    const mappings = ramMappings(await readFile(`/proc/${qemuPid}/maps`, 'utf8'), ramFile);
    if (mappings.length !== 1 || mappings[0]!.firstPage !== 0) {
      throw new HandoffError('TARGET_CANNOT_RUN', `QEMU ${qemuPid} maps ${ramFile} ${mappings.length} times (or not from its start); post-copy serves one whole mapping`);
    }
    const m = mappings[0]!;
    const child = spawn(nativePostCopy().pipeFaultServer, [String(qemuPid), m.start.toString(16), String(m.length), ramFile], { stdio: ['pipe', 'pipe', 'pipe'] });
    let server: FaultServer | undefined;
    await new Promise<void>((resolve, reject) => {
      server = new FaultServer(child, onFault, (line) => (line === 'serving' ? resolve() : reject(new HandoffError('TARGET_CANNOT_RUN', `the post-copy fault server said '${line}'`))));
      child.once('error', (err) => reject(new HandoffError('TARGET_CANNOT_RUN', `the post-copy fault server did not start: ${err.message}`)));
      void server.exited.then((code) => reject(new HandoffError('TARGET_CANNOT_RUN', `the post-copy fault server exited (${code}) before serving: ${server!.stderr.trim()}`)));
    });
    return server!;
  }

  /** Hands one checked page over; resolves when the pipe can take more (its backpressure), fails once the server is gone. */
  put(page: number, bytes: Uint8Array): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return Promise.reject(this.gone());
    const record = Buffer.allocUnsafe(8 + BLOCK_SIZE);
    record.writeBigUInt64LE(BigInt(page), 0);
    record.set(bytes.subarray(0, BLOCK_SIZE), 8);
    return writeWithBackpressure(this.child.stdin!, record, () => this.gone());
  }

  private gone(): HandoffError {
    return new HandoffError('TARGET_CANNOT_RUN', `the post-copy fault server ended: ${this.stderr.trim() || `exit ${this.child.exitCode ?? this.child.signalCode}`}`);
  }

  /** No more pages: the server checks that no hole is left, unregisters and reports. */
  async finish(): Promise<FaultServerReport> {
    this.child.stdin!.end();
    const [line, code] = await Promise.all([this.reported, this.exited]);
    if (code !== 0 || line === undefined) throw new HandoffError('STATE_MISMATCH', `the post-copy fault server ended with ${code}: ${this.stderr.trim()}`);
    return reportSchema.parse(JSON.parse(line));
  }

  /** Ends the server with the range still registered (a later server takes it up). */
  kill(): void {
    if (this.child.exitCode === null) this.child.kill('SIGKILL');
  }
}
