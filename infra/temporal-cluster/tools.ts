import { readFileSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { REPO_ROOT } from '../paths.js';

/** The pins in versions.env (shared with setup-cluster.sh, which builds what they name). */
function readVersions(): Record<string, string> {
  const text = readFileSync(join(dirname(fileURLToPath(import.meta.url)), 'versions.env'), 'utf8');
  return Object.fromEntries([...text.matchAll(/^([A-Z_]+)=(\S+)$/gm)].map((m) => [m[1]!, m[2]!]));
}
const versions = readVersions();
export const TEMPORAL_SERVER_VERSION = versions.TEMPORAL_SERVER_VERSION!;
export const TEMPORAL_UI_SERVER_VERSION = versions.TEMPORAL_UI_SERVER_VERSION!;

const serverDir = join(REPO_ROOT, '.tools', `temporal-server-${TEMPORAL_SERVER_VERSION}`, 'bin');
const uiDir = join(REPO_ROOT, '.tools', `temporal-ui-server-${TEMPORAL_UI_SERVER_VERSION}`, 'bin');

/** The binaries setup-cluster.sh builds; the daemons carry the project's `ehoff` prefix. */
export const CLUSTER_BINARIES = {
  server: join(serverDir, 'ehoff-temporal-server'),
  sqlTool: join(serverDir, 'temporal-sql-tool'),
  tdbg: join(serverDir, 'tdbg'),
  ui: join(uiDir, 'ehoff-temporal-ui'),
};

/** Debian's PostgreSQL server programs (the newest major version installed). */
export async function postgresBinDir(): Promise<string> {
  const majors = (await readdir('/usr/lib/postgresql').catch(() => [] as string[])).filter((d) => /^\d+$/.test(d));
  const newest = majors.map(Number).sort((a, b) => b - a)[0];
  if (newest === undefined) throw new Error('PostgreSQL is not installed (/usr/lib/postgresql/N/bin): run bash infra/temporal-cluster/setup-cluster.sh');
  return `/usr/lib/postgresql/${newest}/bin`;
}
