// The fuzz run's watchdog, on its own thread: it samples the process's resident memory while the
// main thread is busy (a bomb inflates between two of its turns), and ends the process when a
// case has held the main thread past the stuck bound or memory passes the kill line. The main
// thread can do neither itself while a case blocks it, so this thread writes the report.
// Plain JavaScript: a worker thread does not inherit tsx's loader, so it could not load TypeScript.
// Its shared memory's layout and its bounds come in workerData (see watchdog-slots.ts).
import { writeSync } from 'node:fs';
import { workerData } from 'node:worker_threads';

const { slots, text, slot, replayPrefix, stuckBoundMs, rssKillBytes, sampleMs } = workerData;
const state = new Float64Array(slots);
const described = new Uint8Array(text);
const MiB = (bytes) => Math.round(bytes / 2 ** 20);

function caseReport(why) {
  const index = state[slot.caseIndex];
  const input = Buffer.from(described.subarray(0, state[slot.textLength])).toString('utf8');
  return [
    `FAILED case ${index} (${why})`,
    `  replay: ${replayPrefix}${index}`,
    input,
    `fuzz: 1 case FAILED (case ${index}: ${why}; the watchdog ended the run), peak RSS ${MiB(state[slot.peakRss])} MiB`,
    '',
  ].join('\n');
}

setInterval(() => {
  const rss = process.memoryUsage.rss();
  state[slot.peakRss] = Math.max(state[slot.peakRss], rss);
  state[slot.casePeakRss] = Math.max(state[slot.casePeakRss], rss);
  const busy = state[slot.caseIndex] >= 0 ? Date.now() - state[slot.caseStartedAt] : 0;
  const why = busy > stuckBoundMs ? `hang: still running after ${busy} ms` : rss > rssKillBytes ? `memory: ${MiB(rss)} MiB resident` : undefined;
  if (!why) return;
  // Straight to the descriptor: the main thread, which owns process.stdout, is the one stuck.
  writeSync(1, caseReport(why));
  process.kill(process.pid, 'SIGKILL');
}, sampleMs);
