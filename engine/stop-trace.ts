import { debuglog } from 'node:util';

/** NODE_DEBUG=ehoffstop: timestamped events on the stopped VM's path, for finding where its time goes. */
const log = debuglog('ehoffstop');

export function stopTrace(event: string): void {
  if (log.enabled) log(`${Date.now()} ${event}`);
}
