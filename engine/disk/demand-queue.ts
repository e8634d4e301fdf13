/**
 * The missing disk blocks a guest waits on, as the VM host hands them to the worker that fetches
 * them: collected (each once) until the worker asks, and a worker that asks when there are none
 * waits a while for the first. One asker at a time: a newer one (a restarted worker) takes over.
 * Blocks still waited on long after they were handed over are handed again (`remind`): the
 * worker they went to may have died with them.
 */
export class DemandQueue {
  private readonly pending = new Set<number>();
  private readonly handedAt = new Map<number, number>();
  private waiter?: { resolve: (blocks: number[]) => void; timer: NodeJS.Timeout };

  /** Queues again those of `waitedOn` last handed over `afterMs` ago or more (or never). */
  remind(waitedOn: Iterable<number>, afterMs: number, nowMs = Date.now()): void {
    for (const b of waitedOn) if (nowMs - (this.handedAt.get(b) ?? -Infinity) >= afterMs) this.pending.add(b);
  }

  add(index: number): void {
    this.pending.add(index);
    if (this.waiter) this.hand(this.waiter);
  }

  /** The blocks waited on since the last call, ascending; [] if none came within `waitMs`. */
  next(waitMs: number): Promise<number[]> {
    if (this.waiter) this.hand(this.waiter);
    if (this.pending.size > 0 || waitMs === 0) return Promise.resolve(this.take());
    return new Promise((resolve) => {
      const waiter = { resolve, timer: setTimeout(() => this.hand(waiter), waitMs) };
      this.waiter = waiter;
    });
  }

  private hand(waiter: { resolve: (blocks: number[]) => void; timer: NodeJS.Timeout }): void {
    clearTimeout(waiter.timer);
    if (this.waiter === waiter) this.waiter = undefined;
    waiter.resolve(this.take());
  }

  private take(): number[] {
    const blocks = [...this.pending].sort((a, b) => a - b);
    this.pending.clear();
    const now = Date.now();
    for (const b of blocks) this.handedAt.set(b, now);
    return blocks;
  }
}
