import { parseArgs } from 'node:util';
import { z } from 'zod';
import { runFuzz } from './fuzz-run.js';
import { passed, summaryLine } from './report.js';
import { DEFAULT_SETTINGS, type FuzzSettings } from './settings.js';

/**
 * npm run fuzz -- --cases N [--seed S] [--only I] [--socket-every K] [--liveness-every M] [--max-failures F] [--json]
 * Exits 0 only when every case passed and memory stayed under its bound; the last line gives the
 * count, the peak resident memory and the time (with --json, the whole summary as one JSON line).
 */
const count = (min: number) => z.coerce.number().int().min(min);
const argsSchema = z.object({
  cases: count(1).default(1000),
  seed: z.coerce.number().int().default(() => Math.floor(Math.random() * 2 ** 31)),
  only: count(0).optional(),
  'socket-every': count(1).default(DEFAULT_SETTINGS.socketEvery),
  'liveness-every': count(1).default(DEFAULT_SETTINGS.livenessEvery),
  'max-failures': count(1).optional(),
  json: z.boolean().default(false),
});

const USAGE = 'usage: npm run fuzz -- --cases N [--seed S] [--only I] [--socket-every K] [--liveness-every M] [--max-failures F] [--json]';

/** The command line, checked: the settings, or why not. */
function parseCommandLine(): z.infer<typeof argsSchema> | string {
  let values: Record<string, unknown>;
  try {
    ({ values } = parseArgs({
      options: {
        cases: { type: 'string' },
        seed: { type: 'string' },
        only: { type: 'string' },
        'socket-every': { type: 'string' },
        'liveness-every': { type: 'string' },
        'max-failures': { type: 'string' },
        json: { type: 'boolean' },
      },
    }));
  } catch (err) {
    return (err as Error).message;
  }
  const parsed = argsSchema.safeParse(values);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  return `--${issue?.path.join('.')}: ${issue?.message}`;
}

async function main(): Promise<number> {
  // Should the run end without reaching its verdict (the event loop emptied under a lost promise), it failed.
  process.exitCode = 1;
  const a = parseCommandLine();
  if (typeof a === 'string') {
    console.error(`fuzz: ${a}`);
    console.error(USAGE);
    return 2;
  }
  const settings: FuzzSettings = {
    ...DEFAULT_SETTINGS,
    seed: a.seed,
    cases: a.cases,
    ...(a.only !== undefined ? { only: a.only } : {}),
    socketEvery: a['socket-every'],
    livenessEvery: a['liveness-every'],
    maxFailures: a['max-failures'] ?? DEFAULT_SETTINGS.maxFailures,
  };
  console.error(`fuzz: seed ${settings.seed}, ${a.only !== undefined ? `case ${a.only} only` : `${settings.cases} cases`}, every ${settings.socketEvery}th over TLS`);
  const summary = await runFuzz(settings, (line) => console.error(line));
  console.log(a.json ? JSON.stringify(summary) : summaryLine(summary));
  return passed(summary) ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err: Error) => {
    console.error(err.stack ?? err.message);
    console.log(`fuzz: the run itself failed: ${err.message}`);
    process.exit(1);
  },
);
