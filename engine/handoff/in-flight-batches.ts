/** Batches handed to the link and not yet acknowledged as applied by the target. */
export class InFlightBatches {
  private count = 0;
  private waiter?: () => void;

  sent(): void {
    this.count++;
  }

  acked(): void {
    this.count--;
    if (this.count <= 0) this.waiter?.();
  }

  /** Resolves once every batch sent was applied, or after `timeoutMs` (the stop goes on). */
  drained(timeoutMs: number): Promise<void> {
    if (this.count <= 0) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      this.waiter = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }
}
