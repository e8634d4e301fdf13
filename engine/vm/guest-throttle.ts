import { setTimeout as sleep } from 'node:timers/promises';

/** One on/off cycle; short enough that the guest sees a slower CPU, not long stalls. */
const PERIOD_MS = 100;

/**
 * Slows a guest that dirties memory faster than the link drains it, by pausing it for a share of
 * every 100 ms. QEMU's own auto-converge (CPU throttling) crashed guests under TCG here; plain
 * stop/cont does not, and works the same under KVM. The guest's virtual clock stops while it is
 * paused, so its own timekeeping sees no jump.
 */
export class GuestThrottle {
  private share = 0;
  private running?: Promise<void>;
  private stopping = false;

  constructor(private readonly vm: { pause(): Promise<void>; cont(): Promise<void> }) {}

  get pausedShare(): number {
    return this.share;
  }

  /** Sets the share of time paused (0 to 0.9) and starts cycling if it is not already. */
  set(share: number): void {
    this.share = Math.max(0, Math.min(0.9, share));
    if (this.share > 0 && !this.running) {
      this.stopping = false;
      this.running = this.cycle();
    }
  }

  /** Stops cycling and leaves the guest running. */
  async release(): Promise<void> {
    this.stopping = true;
    await this.running;
    this.running = undefined;
    this.share = 0;
  }

  private async cycle(): Promise<void> {
    while (!this.stopping && this.share > 0) {
      const off = Math.round(PERIOD_MS * this.share);
      await this.vm.pause();
      await sleep(off);
      await this.vm.cont();
      await sleep(PERIOD_MS - off);
    }
  }
}
