/**
 * Work done in rounds in the background, one round at a time, until none is pending: what the
 * target's read-back digests run on. A poke starts rounds after a short wait (writes come in
 * bursts; one round per burst); `settle` skips the wait and resolves once nothing is pending.
 */
export class BackgroundRounds {
  private pumping?: Promise<void>;
  /** Ends the coalescing wait early: someone needs the result now. */
  private hurry?: () => void;
  private closed = false;
  private failure?: Error;

  constructor(
    private readonly round: () => Promise<void>,
    private readonly pending: () => boolean,
    private readonly what: string,
  ) {}

  /** Starts rounds after `delayMs`, unless they already run (they then see the new work). */
  poke(delayMs: number): void {
    if (this.pumping || this.closed || this.failure) return;
    // Cleared by the run itself, after this assignment even if the run ends at once: a run that
    // cleared its slot before being stored in it would leave a settled promise there for good,
    // and every later poke would be a no-op.
    const run: Promise<void> = this.pump(delayMs).finally(() => {
      if (this.pumping === run) this.pumping = undefined;
    });
    this.pumping = run;
  }

  private async pump(delayMs: number): Promise<void> {
    try {
      if (delayMs > 0) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, delayMs);
          this.hurry = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        this.hurry = undefined;
      }
      while (this.pending() && !this.closed) await this.round();
    } catch (err) {
      this.failure = new Error(`${this.what}: ${(err as Error).message}`);
    }
  }

  /** Resolves once no work is pending (call when no more comes); rejects if a round failed. */
  async settle(): Promise<void> {
    for (;;) {
      this.hurry?.();
      await this.pumping;
      if (this.failure) throw this.failure;
      if (!this.pending()) return;
      if (this.closed) throw new Error(`${this.what}: closed with work pending`);
      this.poke(0);
    }
  }

  /** Starts no more rounds (the one in flight finishes). */
  close(): void {
    this.closed = true;
    this.hurry?.();
  }
}
