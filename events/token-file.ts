import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';

/** Shorter than this, a bearer token is guessable: refuse to serve with it. */
const MIN_TOKEN_CHARS = 32;

/**
 * The events endpoint's bearer token, kept in a file only its owner reads (0600): made on first
 * use, the same afterwards, so senders configured once keep working across restarts.
 */
export async function ensureTokenFile(file: string): Promise<string> {
  const existing = await readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined;
    throw new Error(`token file ${file}: ${err.message}`);
  });
  if (existing !== undefined) {
    const token = existing.trim();
    if (token.length < MIN_TOKEN_CHARS || /\s/.test(token)) throw new Error(`token file ${file}: the token must be at least ${MIN_TOKEN_CHARS} characters without spaces`);
    return token;
  }
  const token = randomBytes(32).toString('base64url');
  await mkdir(dirname(file), { recursive: true });
  await writeFile(file, `${token}\n`, { mode: 0o600, flag: 'wx' }).catch(async (err: NodeJS.ErrnoException) => {
    // Another process made it first: use theirs.
    if (err.code !== 'EEXIST') throw err;
  });
  return (await readFile(file, 'utf8')).trim();
}
