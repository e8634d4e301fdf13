import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { REPO_ROOT } from '../../infra/paths.js';

/**
 * Runs `npm run ehoff -- <args>` as a user would (the same entry, without npm's banner), or with
 * `entry` 'handoff.ts' `npm run handoff -- <args>`; its exit status and output.
 */
export async function ehoff(args: string[], env: NodeJS.ProcessEnv = {}, entry: 'ehoff.ts' | 'handoff.ts' = 'ehoff.ts'): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'client', 'cli', entry), ...args], {
    cwd: REPO_ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  return { code, stdout, stderr };
}
