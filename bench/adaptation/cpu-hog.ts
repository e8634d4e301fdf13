import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { PREFIX } from '../../infra/paths.js';

/**
 * A process that keeps one core busy, as another tenant's job on the source cloudlet would: the
 * handoff's pipeline, the guest's vCPU and QEMU then share what is left. It spins in slices and
 * ends by itself once its parent is gone (its parent PID changes), so a crashed benchmark does
 * not leave it burning a core.
 */
const SPIN = `
process.title = '${PREFIX}-cpu-hog';
const fs = require('node:fs');
const parent = () => fs.readFileSync('/proc/self/stat', 'utf8').split(') ')[1].split(' ')[1];
const first = parent();
for (;;) {
  const until = Date.now() + 100;
  while (Date.now() < until);
  if (parent() !== first) process.exit(0);
}`;

export interface CpuHog {
  pid: number;
  stop(): Promise<void>;
}

export async function startCpuHog(): Promise<CpuHog> {
  const child = spawn(process.execPath, ['-e', SPIN], { stdio: 'ignore' });
  await once(child, 'spawn');
  const exited = once(child, 'exit');
  return {
    pid: child.pid!,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}
