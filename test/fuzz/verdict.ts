/**
 * What a case found. A receiver may refuse anything it is sent, by a thrown Error that says why;
 * these are what it may not do instead.
 *   crash         an uncaught exception, or a refusal by a JavaScript fault (TypeError, RangeError…)
 *                 rather than by a check: the input reached code that did not expect it
 *   hang          no outcome within the case's time bound
 *   out-of-range  a read or write the store had to refuse: past an image, of no space, not 4 KiB
 *   memory        the process's resident memory went past the run's bound during the case
 *   refused-valid a stream or batch the source's own encoder made was not taken in full
 *   server-down   the data plane stopped taking a fresh, valid overlay
 */
export type FailureKind = 'crash' | 'hang' | 'out-of-range' | 'memory' | 'refused-valid' | 'server-down';

export type Verdict = { passed: true } | { passed: false; failure: FailureKind; detail: string };

export const PASSED: Verdict = { passed: true };

export const failed = (failure: FailureKind, detail: string): Verdict => ({ passed: false, failure, detail });

/** Errors the language raises on a fault in the code, not ones the code raises on bad input. */
const FAULTS = [TypeError, RangeError, ReferenceError, SyntaxError, EvalError] as const;

/** Why `err` is not a clean refusal, or undefined if it is one (an Error with a message, raised by a check). */
export function uncleanRefusal(err: unknown): string | undefined {
  if (!(err instanceof Error)) return `threw a ${typeof err}, not an Error: ${String(err).slice(0, 200)}`;
  if (!err.message) return `threw an ${err.name} without a message\n${err.stack ?? ''}`;
  if (FAULTS.some((f) => err instanceof f)) return `${err.name}: ${err.message}\n${err.stack ?? ''}`;
  return undefined;
}

/** The verdict on a case whose receiver threw `err`: a clean refusal is fine unless the input was valid. */
export function verdictOnRefusal(err: unknown, intact: boolean): Verdict {
  const unclean = uncleanRefusal(err);
  if (unclean) return failed('crash', unclean);
  if (intact) return failed('refused-valid', `a valid input was refused: ${(err as Error).message}`);
  return PASSED;
}

/** The first store violation, as a verdict. */
export function verdictOnStores(...violations: string[][]): Verdict {
  const all = violations.flat();
  return all.length ? failed('out-of-range', `${all.length} refused store accesses, first: ${all[0]}`) : PASSED;
}

/** The first failing of several verdicts on one case, in order of weight. */
export function worst(...verdicts: Verdict[]): Verdict {
  return verdicts.find((v) => !v.passed) ?? PASSED;
}
