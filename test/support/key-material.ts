import { createPrivateKey } from 'node:crypto';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * Every private key in a PEM folder (the development PKI: the CA's and each cloudlet's) in each
 * shape it could leak in: as text — each base64 line of the PEM and its whole body, the scalar in
 * hex and base64 — for histories and logs, and as bytes — the DER key and the bare 32-byte
 * scalar — for packet captures.
 */
export interface KeyMaterial {
  keys: string[];
  texts: string[];
  bytes: Buffer[];
}

export async function keyMaterial(dir: string): Promise<KeyMaterial> {
  const found: KeyMaterial = { keys: [], texts: [], bytes: [] };
  for (const file of (await readdir(dir)).filter((n) => n.endsWith('.key'))) {
    const pem = await readFile(join(dir, file), 'utf8');
    const lines = pem.split('\n').filter((l) => l && !l.startsWith('-----'));
    const key = createPrivateKey(pem);
    const scalar = Buffer.from(key.export({ format: 'jwk' }).d!, 'base64url');
    found.keys.push(file);
    found.texts.push(...lines.filter((l) => l.length >= 16), lines.join(''), scalar.toString('hex'), scalar.toString('base64'));
    found.bytes.push(key.export({ format: 'der', type: 'pkcs8' }), scalar);
  }
  if (found.keys.length < 2) throw new Error(`no private keys to look for in ${dir} (found ${found.keys.join(', ') || 'none'})`);
  return found;
}
