/**
 * Whether a peer that owes answers has given one lately. The target answers each batch, the
 * holdings request of a resumed attempt, the end frame and the commit; while any answer is owed
 * and none came for `limitMs`, `onSilent` is called once.
 *
 * A socket's idle timeout is not enough for this: Node holds it off while a write is still in
 * progress, and a frozen peer's kernel keeps opening its full window a few bytes at a time, so a
 * source paused at the stop waited on a frozen target for as long as it stayed frozen (45 s in
 * the fault suite) instead of resuming its guest after `limitMs`.
 */
export class AnswerWatch {
  private owed = 0;
  /** Since when the peer owes an answer and has said nothing; null while it owes none. */
  private quietSince: number | null = null;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly limitMs: number,
    onSilent: (silentMs: number) => void,
    private readonly now: () => number = Date.now,
    checkEveryMs = 250,
  ) {
    this.timer = setInterval(() => {
      const silent = this.silentMs();
      if (silent !== null && silent >= this.limitMs) {
        this.stop();
        onSilent(silent);
      }
    }, checkEveryMs);
    this.timer.unref();
  }

  /** `n` more answers are owed (frames were handed to the link that the peer answers). */
  expect(n = 1): void {
    if (this.owed === 0) this.quietSince = this.now();
    this.owed += n;
  }

  /** The peer answered one owed frame: it is alive, whatever else it still owes. */
  heard(): void {
    this.owed = Math.max(0, this.owed - 1);
    this.quietSince = this.owed > 0 ? this.now() : null;
  }

  /** How long the peer has owed an answer without giving one; null if it owes none. */
  silentMs(): number | null {
    return this.quietSince === null ? null : this.now() - this.quietSince;
  }

  get answersOwed(): number {
    return this.owed;
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
