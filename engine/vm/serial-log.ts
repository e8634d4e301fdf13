import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { HEARTBEAT_LINES } from './heartbeat-line.js';


/** How much of a guest's console an error quotes. */
const CONSOLE_EXCERPT_CHARS = 200;

/** The guest's serial console as QEMU logs it: boot messages, command replies, heartbeats. */
export class SerialLog {
  constructor(readonly path: string) {}

  async text(): Promise<string> {
    return readFile(this.path, 'utf8').catch(() => '');
  }

  /** The highest heartbeat counter printed so far, or undefined before the first. */
  async lastHeartbeat(): Promise<number | undefined> {
    let last: number | undefined;
    for (const m of (await this.text()).matchAll(HEARTBEAT_LINES)) {
      const n = Number(m[1]);
      if (last === undefined || n > last) last = n;
    }
    return last;
  }

  async waitFor(done: (text: string) => boolean, timeoutMs: number): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const text = await this.text();
      if (done(text)) return text;
      // The guest writes the console: only a short, escaped excerpt goes into an error (and from
      // there into history); the whole is in the file.
      if (Date.now() > deadline) throw new Error(`serial console ${this.path}: condition not met within ${timeoutMs} ms; its last ${CONSOLE_EXCERPT_CHARS} characters: ${JSON.stringify(text.slice(-CONSOLE_EXCERPT_CHARS))}`);
      await sleep(100);
    }
  }

  /** Waits until the heartbeat counter exceeds `after`; returns the counter seen. */
  async waitForHeartbeatAbove(after: number, timeoutMs: number): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hb = await this.lastHeartbeat();
      if (hb !== undefined && hb > after) return hb;
      if (Date.now() > deadline) throw new Error(`no heartbeat above ${after} on ${this.path} within ${timeoutMs} ms (last seen: ${hb ?? 'none'})`);
      await sleep(100);
    }
  }
}
