import { readFile } from 'node:fs/promises';

/** Linux's USER_HZ: /proc reports CPU times in these ticks (100 on every architecture Linux runs here). */
const TICKS_PER_S = 100;

/**
 * How many cores a process keeps busy: from /proc/<pid>/stat's user + system time, over the time
 * since the previous reading of the same key (or since the process started, on the first).
 * A guest's vCPU under TCG, its device threads and QEMU's own work all count: that is its load.
 */
export class CpuMeter {
  private readonly last = new Map<string, { pid: number; ticks: number; atS: number }>();

  async coresBusy(key: string, pid: number): Promise<number | null> {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
    if (stat === undefined) {
      this.last.delete(key);
      return null;
    }
    // Fields after the command name (which may hold spaces), counted from field 3 (state).
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[11]) + Number(fields[12]);
    const startedAtS = Number(fields[19]) / TICKS_PER_S;
    const nowS = Number((await readFile('/proc/uptime', 'utf8')).split(' ')[0]);
    const previous = this.last.get(key);
    this.last.set(key, { pid, ticks, atS: nowS });
    const since = previous && previous.pid === pid ? previous : { ticks: 0, atS: startedAtS };
    const elapsedS = nowS - since.atS;
    if (elapsedS <= 0.05) return null;
    return (ticks - since.ticks) / TICKS_PER_S / elapsedS;
  }

  forget(key: string): void {
    this.last.delete(key);
  }
}
