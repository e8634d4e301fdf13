import { Context } from '@temporalio/activity';
import { ApplicationFailure, TemporalFailure } from '@temporalio/common';
import { HandoffError } from '../engine/errors.js';

/**
 * The most of a failure's message that goes into history: enough to say what failed and where,
 * never a whole console or stderr (what QEMU or a peer printed is outside text).
 */
export const MAX_FAILURE_MESSAGE_CHARS = 1_000;

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
      throw ApplicationFailure.create({ message: boundedMessage(err.message), type: err.code, nonRetryable: !err.retryable });
    }
    // Cancellation and the like, as the SDK made them.
    if (err instanceof TemporalFailure) throw err;
    const e = err instanceof Error ? err : new Error(String(err));
    throw ApplicationFailure.create({ message: boundedMessage(e.message), type: e.name, nonRetryable: false });
  } finally {
    clearInterval(beat);
  }
}

/**
 * A message fit for history: control characters (a guest's console output can hold any) escaped,
 * at most MAX_FAILURE_MESSAGE_CHARS, the cut said.
 */
export function boundedMessage(message: string): string {
  if (message.length > MAX_FAILURE_MESSAGE_CHARS) console.error(`activity failure, whole message: ${message}`);
  const escaped = message.replace(/[\x00-\x08\x0b-\x1f\x7f-\x9f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
  return escaped.length <= MAX_FAILURE_MESSAGE_CHARS ? escaped : `${escaped.slice(0, MAX_FAILURE_MESSAGE_CHARS)}… (${escaped.length - MAX_FAILURE_MESSAGE_CHARS} more characters in the worker's log)`;
}
