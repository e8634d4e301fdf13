import { pino, type Logger } from 'pino';
import pretty, { prettyFactory } from 'pino-pretty';

/**
 * The project's logs: JSON lines on stderr (one object per line, with the event, workflow and VM
 * ids as fields), or the same lines made readable when stderr is a terminal. stdout stays free for
 * what a command answers (a ready line, a result).
 */
export function createLogger(component: string, fields: Record<string, unknown> = {}): Logger {
  const base = { component, ...fields };
  if (readableLogs()) return pino({ base }, pretty({ destination: 2, ...PRETTY }));
  return pino({ base }, pino.destination({ fd: 2, sync: true }));
}

const PRETTY = { colorize: true, ignore: 'pid,hostname', translateTime: 'HH:MM:ss.l' };
const readableLogs = () => process.stderr.isTTY && !process.env.EHOFF_LOG_JSON;

/**
 * Writes a log line another process made (a worker's JSON line) to this one's stderr, made
 * readable the same way when stderr is a terminal; a line that is not JSON passes as it is.
 */
export function logLineWriter(): (line: string) => void {
  if (!readableLogs()) return (line) => process.stderr.write(`${line}\n`);
  const prettify = prettyFactory(PRETTY);
  return (line) => {
    try {
      process.stderr.write(prettify(JSON.parse(line) as Record<string, unknown>));
    } catch {
      process.stderr.write(`${line}\n`);
    }
  };
}
export type { Logger };
