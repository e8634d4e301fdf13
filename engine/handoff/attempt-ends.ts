import { deferred, type Deferred } from '../deferred.js';

/** One attempt's complete end frame at the target, and whether the source committed to it. */
export interface AttemptEnd<T> {
  attempt: number;
  value: T;
  /** Host time (ms) the end frame was taken in. */
  at: number;
  /** True once the source's commit frame for this attempt arrived; false if the attempt ended without it. */
  committed: Promise<boolean>;
}

/**
 * The target's view of a handoff's stream attempts, as they end: an end frame arrives (the
 * overlay is complete), then either the source's commit frame for it — from then on the VM is
 * the target's to run and no newer attempt is taken — or the attempt ends without one (its
 * connection broke, a newer attempt superseded it), and the target waits for the next end.
 * The source resumes its own copy only while it has not sent that commit, so the two never run
 * the VM at once.
 */
export class AttemptEnds<T> {
  private waiting = deferred<AttemptEnd<T>>();
  private pending?: { attempt: number; commit: Deferred<boolean> };
  private committedAttempt?: number;
  private failure?: Error;

  /** `newest`: the highest attempt begun so far (a recovered session's, from its record). */
  constructor(private newest = 0) {}

  /** The next end frame (or the current one, if it still waits for its commit). */
  next(): Promise<AttemptEnd<T>> {
    return this.waiting.promise;
  }

  /** The attempt that committed, if one did. */
  get committed(): number | undefined {
    return this.committedAttempt;
  }

  /**
   * A new attempt connected. Refused (the reason returned) once an earlier one committed; an
   * earlier end still waiting for its commit is withdrawn: its source moved on.
   */
  begin(attempt: number): string | undefined {
    if (this.committedAttempt !== undefined) return `attempt ${this.committedAttempt} already committed; attempt ${attempt} is refused`;
    if (attempt < this.newest) return `attempt ${attempt} is older than attempt ${this.newest}, which began here`;
    this.newest = attempt;
    if (this.pending && this.pending.attempt !== attempt) this.withdraw(this.pending.attempt);
    return undefined;
  }

  /** Whether the end of `attempt` arrived and waits for its commit. */
  awaitsCommit(attempt: number): boolean {
    return this.pending?.attempt === attempt && this.committedAttempt === undefined && !this.failure;
  }

  /** The end frame of `attempt` arrived, complete. */
  ended(attempt: number, value: T): void {
    if (this.failure) return;
    if (this.pending) this.withdraw(this.pending.attempt);
    const commit = deferred<boolean>();
    this.pending = { attempt, commit };
    this.waiting.resolve({ attempt, value, at: Date.now(), committed: commit.promise });
  }

  /** The source's commit frame for `attempt` arrived; false if that end no longer counts. */
  granted(attempt: number): boolean {
    if (this.pending?.attempt !== attempt || this.failure) return false;
    this.committedAttempt = attempt;
    this.pending.commit.resolve(true);
    return true;
  }

  /** The connection of `attempt` ended; if its end frame came without a commit, that end no longer counts. */
  withdraw(attempt: number): void {
    if (!this.pending || this.pending.attempt !== attempt || this.committedAttempt === attempt) return;
    this.pending.commit.resolve(false);
    this.pending = undefined;
    this.waiting = deferred();
    if (this.failure) this.waiting.reject(this.failure);
  }

  /** The handoff ended here (aborted, or the VM cannot run here): every wait fails with `err`. */
  fail(err: Error): void {
    this.failure ??= err;
    this.waiting.reject(err);
    this.pending?.commit.reject(err);
  }
}
