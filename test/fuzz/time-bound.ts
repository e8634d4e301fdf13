/**
 * `work`'s result if it settles within `ms`, else 'timed out'. Also 'timed out' if it settled
 * late: a case that blocks the event loop settles before the timer can fire, and is a hang all
 * the same.
 */
export async function withinBound<T>(work: Promise<T>, ms: number): Promise<{ value: T; ms: number } | 'timed out'> {
  const started = performance.now();
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'timed out'>((resolve) => (timer = setTimeout(() => resolve('timed out'), ms)));
  try {
    const outcome = await Promise.race([work.then((value) => ({ value })), late]);
    const took = performance.now() - started;
    if (outcome === 'timed out' || took > ms) return 'timed out';
    return { value: outcome.value, ms: took };
  } finally {
    clearTimeout(timer);
  }
}
