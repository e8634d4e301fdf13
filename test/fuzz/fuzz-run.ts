import { buildCorpus } from './corpus.js';
import { drawInput, kindOf, type CaseKind, type FuzzInput } from './fuzz-inputs.js';
import { runBatchInMemory, runStreamInMemory } from './memory-harness.js';
import { describeInput, formatFailure, replayCommand, type CaseFailure, type FuzzSummary } from './report.js';
import type { FuzzSettings } from './settings.js';
import { SocketHarness } from './socket-harness.js';
import { failed, type Verdict } from './verdict.js';
import { Watchdog } from './watchdog.js';

/**
 * Runs the cases of `settings` against the frame decoder, the batch applier and a live data
 * plane server, in this process: the CLI and the test both call it. `log` gets sparse progress
 * and each failure as it is found, with how to replay it.
 */
export async function runFuzz(settings: FuzzSettings, log: (line: string) => void = () => undefined): Promise<FuzzSummary> {
  const started = performance.now();
  const corpus = await buildCorpus();
  const indices = settings.only !== undefined ? [settings.only] : Array.from({ length: settings.cases }, (_, i) => i);
  const byKind: Record<CaseKind, number> = { random: 0, mutated: 0, batch: 0, socket: 0 };
  const failures: CaseFailure[] = [];
  const watchdog = await Watchdog.start(settings);
  const socket = indices.some((i) => kindOf(i, settings.socketEvery) === 'socket') ? await SocketHarness.start() : undefined;
  // Anything the receiving side throws where no one catches it would end a real cloudlet's
  // process: here it is caught, so the run goes on, and blamed on the case running.
  const uncaught: unknown[] = [];
  const onUncaught = (err: unknown) => void uncaught.push(err);
  process.on('uncaughtException', onUncaught);
  process.on('unhandledRejection', onUncaught);
  let livenessChecks = 0;
  let lastProgress = performance.now();
  const fail = (index: number, kind: CaseKind, verdict: Exclude<Verdict, { passed: true }>, input: string) => {
    const f: CaseFailure = { index, kind, failure: verdict.failure, detail: verdict.detail, input };
    failures.push(f);
    log(formatFailure(f, replayCommand(settings.seed, settings.socketEvery, index)));
  };
  const checkAlive = async (index: number) => {
    livenessChecks++;
    const verdict = await socket!.checkAlive(corpus.batches[livenessChecks % corpus.batches.length]!, settings.caseTimeBoundMs * 2);
    if (!verdict.passed) fail(index, 'socket', verdict, '  (a fresh valid overlay after this case)');
  };
  try {
    for (const [n, index] of indices.entries()) {
      const input = await drawInput(corpus, settings.seed, index, settings.socketEvery);
      const description = describeInput(input);
      const rssBefore = process.memoryUsage.rss();
      watchdog.caseStarted(index, description);
      let verdict = await runCase(input, settings, socket);
      const { casePeakRss } = watchdog.caseEnded();
      if (verdict.passed && uncaught.length) verdict = failed('crash', `uncaught in the process: ${describeError(uncaught[0])}`);
      uncaught.length = 0;
      // Memory first: a receiver inflating gigabytes is slow too, and the memory is the cause.
      if (casePeakRss > settings.rssBoundBytes && rssBefore <= settings.rssBoundBytes) {
        const also = verdict.passed ? '' : ` (and ${verdict.failure}: ${verdict.detail})`;
        verdict = failed('memory', `resident memory reached ${Math.round(casePeakRss / 2 ** 20)} MiB, past the ${Math.round(settings.rssBoundBytes / 2 ** 20)} MiB bound${also}`);
      }
      byKind[input.kind]++;
      if (!verdict.passed) fail(index, input.kind, verdict, description);
      if (input.kind === 'socket' && byKind.socket % settings.livenessEvery === 0) await checkAlive(index);
      if (failures.length >= settings.maxFailures) {
        log(`fuzz: stopping after ${failures.length} failures`);
        break;
      }
      if (performance.now() - lastProgress > 10_000 || n === indices.length - 1) {
        lastProgress = performance.now();
        log(`fuzz: ${n + 1}/${indices.length} cases, ${failures.length} failed, peak RSS ${Math.round(watchdog.peakRss() / 2 ** 20)} MiB, ${Math.round((performance.now() - started) / 1000)} s`);
      }
    }
    if (socket && byKind.socket % settings.livenessEvery !== 0 && failures.length < settings.maxFailures) await checkAlive(indices[indices.length - 1]!);
  } finally {
    process.off('uncaughtException', onUncaught);
    process.off('unhandledRejection', onUncaught);
    const held = await socket?.stop();
    if (held) log(`fuzz: the server still held ${held} connections a second after the last case, their peers long gone`);
    await watchdog.stop();
  }
  return {
    seed: settings.seed,
    cases: Object.values(byKind).reduce((n, k) => n + k, 0),
    planned: indices.length,
    byKind,
    failures,
    livenessChecks,
    peakRssBytes: watchdog.peakRss(),
    rssBoundBytes: settings.rssBoundBytes,
    ms: performance.now() - started,
  };
}

function runCase(input: FuzzInput, settings: FuzzSettings, socket: SocketHarness | undefined): Promise<Verdict> {
  switch (input.kind) {
    case 'batch':
      return runBatchInMemory(input, settings.caseTimeBoundMs);
    case 'socket':
      return socket!.runCase(input, settings.caseTimeBoundMs);
    default:
      return runStreamInMemory(input, settings.caseTimeBoundMs);
  }
}

function describeError(err: unknown): string {
  return err instanceof Error ? `${err.name}: ${err.message}\n${err.stack ?? ''}` : String(err);
}
