import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import { HandoffError } from '../engine/errors.js';

/** Five heartbeats within the shortest heartbeat timeout (5 s, the stream's). */
const HEARTBEAT_EVERY_MS = 1_000;

/**
 * Runs an engine call as an activity body: heartbeats while it works (so a dead worker is noticed
 * within the heartbeat timeout), and turns the engine's named errors into typed Temporal failures
 * whose retryability the engine decided.
 */
export async function asActivity<T>(work: () => Promise<T>, progress?: () => unknown): Promise<T> {
  const ctx = Context.current();
  // The details are what an operator sees of a running attempt in the UI, and what a retried
  // attempt could read of its predecessor's (heartbeatDetails).
  const beat = setInterval(() => ctx.heartbeat(progress?.()), HEARTBEAT_EVERY_MS);
  try {
    return await work();
  } catch (err) {
    if (err instanceof HandoffError) {
      throw ApplicationFailure.create({ message: err.message, type: err.code, nonRetryable: !err.retryable });
    }
    throw err;
  } finally {
    clearInterval(beat);
  }
}
