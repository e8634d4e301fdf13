import fc from 'fast-check';

/**
 * The random choices of one case, drawn from fast-check's generator seeded by (run seed, case
 * index) alone: case 7 of seed 42 is the same input whether the run has 10 cases or 100,000,
 * so a failure replays by itself.
 */
export class Draw {
  private readonly g: fc.GeneratorValue;

  constructor(runSeed: number, caseIndex: number) {
    const [g] = fc.sample(fc.gen(), { seed: caseSeed(runSeed, caseIndex), numRuns: 1 });
    this.g = g!;
  }

  /** An integer in [min, max]. */
  int(min: number, max: number): number {
    return this.g(fc.integer, { min, max });
  }

  /** True with probability `p`. */
  chance(p: number): boolean {
    return this.g(fc.double, { min: 0, max: 1, noNaN: true }) < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(0, items.length - 1)]!;
  }

  /** One of `choices`, in proportion to its weight. */
  weighted<T>(choices: ReadonlyArray<readonly [weight: number, value: T]>): T {
    const total = choices.reduce((n, [w]) => n + w, 0);
    let at = this.int(0, total - 1);
    for (const [w, v] of choices) {
      if (at < w) return v;
      at -= w;
    }
    return choices[choices.length - 1]![1];
  }

  /**
   * `length` random bytes. Long runs of numbers come from a BulkDraw seeded here: fast-check
   * draws each value on its own, which for a 64 KiB input would cost more than the case.
   */
  bytes(length: number): Buffer {
    return this.bulk().bytes(length);
  }

  bulk(): BulkDraw {
    return new BulkDraw(this.int(1, 0x7fffffff));
  }
}

/** xorshift32 from one drawn seed: cheap numbers for piece lengths and filler bytes. */
export class BulkDraw {
  constructor(private x: number) {}

  private next(): number {
    this.x ^= this.x << 13;
    this.x ^= this.x >>> 17;
    this.x ^= this.x << 5;
    return this.x >>> 0;
  }

  /** An integer in [min, max] (a range below 2³²). */
  int(min: number, max: number): number {
    return min + (this.next() % (max - min + 1));
  }

  chance(p: number): boolean {
    return this.next() / 0x100000000 < p;
  }

  bytes(length: number): Buffer {
    const out = Buffer.allocUnsafe(length);
    for (let i = 0; i < length; i++) out[i] = this.next() & 0xff;
    return out;
  }
}

/** fast-check takes a 32-bit seed: (run seed, case index) mixed into one (splitmix32's finaliser). */
export function caseSeed(runSeed: number, caseIndex: number): number {
  let h = (Math.imul(runSeed | 0, 0x9e3779b9) ^ Math.imul(caseIndex | 0, 0x85ebca6b)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x21f0aaad);
  h = Math.imul(h ^ (h >>> 15), 0x735a2d97);
  return (h ^ (h >>> 15)) | 0;
}
