import { createHash } from 'node:crypto';
import { mkdir, readFile, readdir, rename, writeFile, access } from 'node:fs/promises';
import { join } from 'node:path';
import { bundleWorkflowCode } from '@temporalio/worker';
import { CACHE_DIR, REPO_ROOT } from './paths.js';

/**
 * Bundles the workflows once per source change and caches the bundle, so each cloudlet worker
 * starts in a second instead of running webpack itself.
 */
export async function ensureWorkflowBundle(): Promise<string> {
  const sources = ['workflows', 'engine'];
  const h = createHash('sha256');
  for (const dir of sources) {
    for (const f of (await readdir(join(REPO_ROOT, dir), { recursive: true })).sort()) {
      if (!f.endsWith('.ts')) continue;
      h.update(f).update(await readFile(join(REPO_ROOT, dir, f)));
    }
  }
  const path = join(CACHE_DIR, `workflow-bundle-${h.digest('hex').slice(0, 16)}.js`);
  if (await access(path).then(() => true, () => false)) return path;
  const { code } = await bundleWorkflowCode({ workflowsPath: join(REPO_ROOT, 'workflows', 'index.ts'), logger: quietLogger });
  await mkdir(CACHE_DIR, { recursive: true });
  await writeFile(`${path}.tmp`, code);
  await rename(`${path}.tmp`, path);
  return path;
}

const noop = () => undefined;
const quietLogger = { trace: noop, debug: noop, info: noop, warn: noop, error: (m: string) => console.error(m), log: noop };
