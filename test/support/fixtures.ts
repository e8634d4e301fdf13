import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { ensureBaseImage, type BuiltBaseImage } from '../../infra/base-image/build-base-image.js';

/** The base image the tests share with the demo (built once, cached by recipe). */
export function testBaseImage(): Promise<BuiltBaseImage> {
  return ensureBaseImage({ memoryMiB: 512, accel: 'tcg', log: (l) => console.error(`# ${l}`) });
}

/** A short per-test folder under /tmp with the project prefix (unix socket paths are limited). */
export async function tempRoot(tag: string): Promise<{ dir: string; remove(): Promise<void> }> {
  const dir = await mkdtemp(join('/tmp', `ehoff-${tag}-`));
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
}
