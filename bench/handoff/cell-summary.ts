import type { BenchRow, System } from './report.js';

/**
 * The matrix one line per cell, and the issue's targets for one policy, read from a report's
 * rows: what the README and docs/bench summarise, computed rather than copied by hand.
 */

export interface Cell {
  workload: string;
  mbps: number;
  /** Each system's row in the cell (a failed one included). */
  rows: Map<System, BenchRow>;
}

/** The rows grouped by (workload, rate), in the order the cells first appear. */
export function cellsOf(rows: readonly BenchRow[]): Cell[] {
  const cells = new Map<string, Cell>();
  for (const row of rows) {
    const key = `${row.workload}@${row.mbps}`;
    if (!cells.has(key)) cells.set(key, { workload: row.workload, mbps: row.mbps, rows: new Map() });
    cells.get(key)!.rows.set(row.system, row);
  }
  return [...cells.values()];
}

/** One line per cell: each system's total, both handoff policies' downtime, guest gap and degraded time. */
export function cellTable(rows: readonly BenchRow[]): string {
  const lines = [
    '| workload | Mbit/s | hybrid s | pre-copy s | QEMU tuned s | QEMU classic s | floor s | hybrid downtime / guest gap / degraded s | pre-copy downtime / guest gap / degraded s | post-copy pages (on demand, median ms) |',
    '|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const cell of cellsOf(rows)) {
    const total = (system: System) => {
      const r = cell.rows.get(system);
      if (!r) return '—';
      if (r.failed) return 'failed';
      if (r.guestContinued === false) return `${r.totalSeconds.toFixed(1)} (guest did not go on)`;
      // A handoff row is never capped: not completed is not verified.
      if (!r.completed) return system.startsWith('handoff') ? `${r.totalSeconds.toFixed(1)} (not verified)` : `≥ ${r.totalSeconds.toFixed(1)}`;
      return r.totalSeconds.toFixed(1);
    };
    const pauses = (system: System) => {
      const r = cell.rows.get(system);
      if (!r) return '—';
      if (r.failed) return 'failed';
      const degraded = r.degraded ? `${r.degraded.recovered ? '' : '≥ '}${r.degraded.seconds.toFixed(2)}` : '—';
      return `${seconds(r.downtimeSeconds)} / ${seconds(r.guestGapSeconds)} / ${degraded}`;
    };
    const pc = cell.rows.get('handoff')?.postCopy;
    const postCopy = pc ? `${pc.stalePages} (${pc.remoteFaults}, ${pc.faultLatencyMedianMs ?? '—'})` : '—';
    lines.push(`| ${cell.workload} | ${cell.mbps} | ${total('handoff')} | ${total('handoff-precopy')} | ${total('qemu-tuned')} | ${total('qemu-classic')} | ${total('floor')} | ${pauses('handoff')} | ${pauses('handoff-precopy')} | ${postCopy} |`);
  }
  return lines.join('\n');
}

export interface TargetResult {
  target: string;
  /** Cells where it holds, of the cells it could be judged in. */
  holds: number;
  cells: number;
  /** The figures behind the count: their range, and where it missed. */
  detail: string;
}

/**
 * The benchmark's targets for `system`'s rows (the issue's: downtime ≤ 1 s host and guest, total
 * ≤ 1.5× the floor, faster than QEMU tuned, ≥ 10× QEMU classic), cell by cell. A row of ours
 * that failed, or was not verified, or whose guest did not go on misses every target of its cell.
 */
export function targetResults(rows: readonly BenchRow[], system: System = 'handoff'): TargetResult[] {
  const cells = cellsOf(rows).filter((c) => c.rows.has(system));
  const name = (c: Cell) => `${c.workload}@${c.mbps}`;
  /** Our row in the cell if it counts, else why not. */
  const mine = (c: Cell): BenchRow | string => {
    const r = c.rows.get(system)!;
    if (r.failed) return 'failed';
    if (!r.completed) return r.guestContinued === false ? 'its guest did not go on' : 'not verified';
    return r;
  };

  const underOneSecond = (target: string, value: (r: BenchRow) => number | null): TargetResult => {
    const figures: number[] = [];
    const misses: string[] = [];
    for (const c of cells) {
      const r = mine(c);
      const v = typeof r === 'string' ? null : value(r);
      if (v === null) misses.push(`${name(c)} (${typeof r === 'string' ? r : 'not measured'})`);
      else {
        figures.push(v);
        if (v > 1) misses.push(`${name(c)} (${v.toFixed(2)} s)`);
      }
    }
    return { target, holds: cells.length - misses.length, cells: cells.length, detail: `${range(figures, 2)} s${missedAt(misses)}` };
  };

  /**
   * `other`'s time over ours, judged against `factor` (holds at or above it; `strictly`: above).
   * A QEMU row that hit its cap ran longer than it says, so its ratio is a lower bound: enough
   * if it reaches the factor, else not known — the caps are set from the hybrid's time, so
   * pre-copy's ratio to a capped row can fall short of it. A QEMU row whose guest did not go on
   * was no migration: its cell is not judged.
   */
  const ratioTo = (other: System, factor: number, strictly: boolean, target: string): TargetResult => {
    const ratios: number[] = [];
    let finished = 0;
    let capped = 0;
    let judged = 0;
    const misses: string[] = [];
    const unknown: string[] = [];
    const invalid: string[] = [];
    for (const c of cells) {
      const o = c.rows.get(other);
      if (!o) continue;
      if (o.guestContinued === false) {
        invalid.push(name(c));
        continue;
      }
      if (o.completed) finished++;
      else capped++;
      const r = mine(c);
      if (typeof r === 'string') {
        judged++;
        misses.push(`${name(c)} (${r})`);
        continue;
      }
      const ratio = o.totalSeconds / r.totalSeconds;
      const reached = strictly ? ratio > factor : ratio >= factor;
      if (o.completed || reached) judged++;
      if (!reached) (o.completed ? misses : unknown).push(`${name(c)} (${o.completed ? '' : '≥ '}${ratio.toFixed(2)}×)`);
      if (o.completed) ratios.push(ratio);
    }
    const ran = `${finished ? `it finished in ${cellCount(finished)}${ratios.length ? ` (${range(ratios, 2)}×)` : ''}` : 'it finished in no cell'}${capped ? `; hit its cap in ${cellCount(capped)}` : ''}`;
    const notKnown = unknown.length ? `; not known where its cap was too low: ${unknown.join(', ')}` : '';
    const noMigration = invalid.length ? `; its guest did not go on at ${invalid.join(', ')} (not judged)` : '';
    return { target, holds: judged - misses.length, cells: judged, detail: `${ran}${missedAt(misses)}${notKnown}${noMigration}` };
  };

  const floorCells = cells.filter((c) => c.rows.has('floor'));
  const floorMisses: string[] = [];
  const floorUnmeasured: string[] = [];
  const byWorkload = new Map<string, number[]>();
  for (const c of floorCells) {
    const r = mine(c);
    const floor = c.rows.get('floor')!.totalSeconds;
    if (typeof r === 'string' || floor <= 0) {
      floorMisses.push(name(c));
      floorUnmeasured.push(`${name(c)} (${typeof r === 'string' ? r : 'the floor is 0 s'})`);
    } else {
      const ratio = r.totalSeconds / floor;
      byWorkload.set(c.workload, [...(byWorkload.get(c.workload) ?? []), ratio]);
      if (ratio > 1.5) floorMisses.push(name(c));
    }
  }
  return [
    underOneSecond('Host downtime ≤ 1 s', (r) => r.downtimeSeconds),
    underOneSecond('Guest gap ≤ 1 s', (r) => r.guestGapSeconds),
    {
      target: 'Total ≤ 1.5× the floor',
      holds: floorCells.length - floorMisses.length,
      cells: floorCells.length,
      detail: [[...byWorkload].map(([w, ratios]) => `${w} ${range(ratios, 2)}×`).join(', '), floorUnmeasured.length ? `no ratio at ${floorUnmeasured.join(', ')}` : ''].filter(Boolean).join('; '),
    },
    ratioTo('qemu-tuned', 1, true, 'Faster than QEMU tuned'),
    ratioTo('qemu-classic', 10, false, '≥ 10× QEMU classic'),
  ];
}

/** The targets as a table for each handoff policy the rows have: what the benchmark prints last. */
export function targetsReport(rows: readonly BenchRow[]): string {
  return (['handoff', 'handoff-precopy'] as const)
    .filter((system) => rows.some((r) => r.system === system))
    // A target with no cell to judge (a run without QEMU's rows or the floor) is left out.
    .map((system) => `Targets for ${system}:\n\n${targetsTable(targetResults(rows, system).filter((t) => t.cells > 0))}`)
    .join('\n\n');
}

export function targetsTable(results: readonly TargetResult[]): string {
  return ['| target | holds in | figures |', '|---|---|---|', ...results.map((t) => `| ${t.target} | ${t.holds} of ${cellCount(t.cells)} | ${t.detail} |`)].join('\n');
}

function cellCount(n: number): string {
  return n === 1 ? 'one cell' : `${n} cells`;
}

function seconds(v: number | null): string {
  return v === null ? '—' : v.toFixed(2);
}

function range(values: readonly number[], digits: number): string {
  if (values.length === 0) return '—';
  const [lo, hi] = [Math.min(...values), Math.max(...values)];
  return lo.toFixed(digits) === hi.toFixed(digits) ? lo.toFixed(digits) : `${lo.toFixed(digits)}–${hi.toFixed(digits)}`;
}

function missedAt(misses: readonly string[]): string {
  return misses.length === 0 ? '' : `; missed at ${misses.join(', ')}`;
}
