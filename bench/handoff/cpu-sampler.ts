import { readFile, readdir } from 'node:fs/promises';

/** Linux reports CPU time in clock ticks; USER_HZ is 100 on every architecture QEMU runs here. */
const TICKS_PER_SECOND = 100;
/** QEMU's vCPU threads: their time is the guest running, not the migration. */
const VCPU_THREAD = /^CPU \d+\/(TCG|KVM)$/;

async function statFields(path: string): Promise<{ comm: string; ticks: number } | undefined> {
  const text = await readFile(path, 'utf8').catch(() => undefined);
  if (!text) return undefined;
  // comm is in parentheses and may hold spaces; the numeric fields follow the last ')'.
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  const rest = text.slice(close + 2).split(' ');
  // Fields 14 and 15 (utime, stime) are the 12th and 13th after comm and state.
  return { comm: text.slice(open + 1, close), ticks: Number(rest[11]) + Number(rest[12]) };
}

/** CPU ticks a process spent outside its vCPU threads (exited threads count in the process total). */
async function nonGuestTicks(pid: number): Promise<number | undefined> {
  const total = await statFields(`/proc/${pid}/stat`);
  if (!total) return undefined;
  let guest = 0;
  for (const tid of await readdir(`/proc/${pid}/task`).catch(() => [] as string[])) {
    const t = await statFields(`/proc/${pid}/task/${tid}/stat`);
    if (t && VCPU_THREAD.test(t.comm)) guest += t.ticks;
  }
  return total.ticks - guest;
}

async function childrenOf(pid: number): Promise<number[]> {
  const out: number[] = [];
  for (const tid of await readdir(`/proc/${pid}/task`).catch(() => [] as string[])) {
    const text = await readFile(`/proc/${pid}/task/${tid}/children`, 'utf8').catch(() => '');
    for (const c of text.split(' ')) if (c.trim()) out.push(Number(c));
  }
  return out;
}

/**
 * CPU seconds a set of processes (and, optionally, their descendants) spend during a run, vCPU
 * threads left out so that the guest's own work does not count as migration cost. Sampled every
 * 250 ms and kept per PID, so a process that exits mid-run (a retired source QEMU) still counts
 * up to its last sample.
 */
export class CpuSampler {
  private readonly first = new Map<number, number>();
  private readonly last = new Map<number, number>();
  private timer?: NodeJS.Timeout;
  private sampling?: Promise<void>;

  constructor(
    private readonly roots: number[],
    private readonly opts: { descendants: boolean } = { descendants: false },
  ) {}

  async start(): Promise<void> {
    await this.sample();
    this.timer = setInterval(() => {
      this.sampling ??= this.sample().finally(() => (this.sampling = undefined));
    }, 250);
  }

  /** Stops sampling and returns the CPU seconds spent since `start`. */
  async stop(): Promise<number> {
    clearInterval(this.timer);
    await this.sampling;
    await this.sample();
    let ticks = 0;
    for (const [pid, last] of this.last) ticks += last - (this.first.get(pid) ?? 0);
    return ticks / TICKS_PER_SECOND;
  }

  private async sample(): Promise<void> {
    const pids = new Set(this.roots);
    if (this.opts.descendants) {
      const queue = [...this.roots];
      while (queue.length) for (const c of await childrenOf(queue.pop()!)) if (!pids.has(c)) (pids.add(c), queue.push(c));
    }
    const initial = this.first.size === 0 && this.last.size === 0;
    for (const pid of pids) {
      const ticks = await nonGuestTicks(pid);
      if (ticks === undefined) continue;
      // A process first seen after start (a target QEMU started by the handoff) counts from zero.
      if (initial && !this.first.has(pid)) this.first.set(pid, ticks);
      this.last.set(pid, ticks);
    }
  }
}
