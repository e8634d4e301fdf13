import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { access, chmod, chown, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { portIsFree } from '../temporal-dev-server.js';
import { HOST, type ClusterLayout } from './layout.js';
import { livePid, logTail, spawnDaemon, stopDaemon } from './processes.js';
import { DATABASES, type DatabaseAccess } from './server-config.js';
import { CLUSTER_BINARIES, postgresBinDir } from './tools.js';

const run = promisify(execFile);

/**
 * A private PostgreSQL instance for the cluster (Debian's server programs, not its system
 * service): its own data folder under the cluster's state, its own port on 127.0.0.1, its
 * socket in the data folder. As root it runs as the `postgres` user (PostgreSQL refuses root).
 * The bootstrap role `temporal` owns both databases; its password is made once and kept 0600.
 */

const DB_USER = 'temporal';

async function runAs(): Promise<{ uid: number; gid: number } | undefined> {
  if (process.getuid?.() !== 0) return undefined;
  const { stdout: uid } = await run('id', ['-u', 'postgres']).catch(() => {
    throw new Error('running as root, the cluster needs the `postgres` user to run PostgreSQL (apt-get install postgresql-15)');
  });
  const { stdout: gid } = await run('id', ['-g', 'postgres']);
  return { uid: Number(uid.trim()), gid: Number(gid.trim()) };
}

/** The command-line marker of this instance: its data folder. */
export const postgresNeedles = (layout: ClusterLayout) => ['postgres', layout.postgres.dataDir];

async function password(layout: ClusterLayout): Promise<string> {
  const file = join(layout.stateDir, 'postgres-password');
  const known = await readFile(file, 'utf8').catch(() => undefined);
  if (known) return known.trim();
  const made = randomBytes(18).toString('base64url');
  await writeFile(file, `${made}\n`, { mode: 0o600 });
  return made;
}

async function initialise(layout: ClusterLayout, bin: string, user: { uid: number; gid: number } | undefined, pw: string): Promise<void> {
  const { dataDir } = layout.postgres;
  if (await access(join(dataDir, 'PG_VERSION')).then(() => true, () => false)) return;
  await rm(dataDir, { recursive: true, force: true });
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  // initdb reads the password from a file it can open as its own user; gone right after.
  const pwFile = join(dataDir, '..', `ehoff-pg-pw-${process.pid}`);
  await writeFile(pwFile, `${pw}\n`, { mode: 0o600 });
  try {
    if (user) {
      await chown(dataDir, user.uid, user.gid);
      await chown(pwFile, user.uid, user.gid);
    }
    await run(join(bin, 'initdb'), ['-D', dataDir, '-U', DB_USER, `--pwfile=${pwFile}`, '--auth=scram-sha-256', '-E', 'UTF8', '--locale=C'], { ...(user ?? {}) }).catch((e: Error & { stderr?: string }) => {
      throw new Error(`initdb failed: ${(e.stderr ?? e.message).trim().slice(-800)}`);
    });
  } finally {
    await rm(pwFile, { force: true });
  }
}

/** Starts the instance unless it runs (its PID file checked against its command line); returns how to reach it. */
export async function ensurePostgres(layout: ClusterLayout): Promise<DatabaseAccess & { pid: number }> {
  const bin = await postgresBinDir();
  const user = await runAs();
  const pw = await password(layout);
  const db = { port: layout.postgres.port, user: DB_USER, password: pw };
  let pid = await livePid(layout.postgres.pidFile, postgresNeedles(layout));
  if (pid === undefined) {
    // A postmaster whose PID file we lost (a crashed `up`) is found through its own postmaster.pid.
    const own = await readFile(join(layout.postgres.dataDir, 'postmaster.pid'), 'utf8').catch(() => undefined);
    if (own) {
      await writeFile(layout.postgres.pidFile, `${own.split('\n')[0]}\n`);
      pid = await livePid(layout.postgres.pidFile, postgresNeedles(layout));
    }
  }
  if (pid === undefined) {
    if (!(await portIsFree(layout.postgres.port, HOST))) throw new Error(`port ${layout.postgres.port} (postgres) is taken by a process this cluster did not record`);
    await initialise(layout, bin, user, pw);
    const { dataDir, port } = layout.postgres;
    const started = await spawnDaemon({
      command: join(bin, 'postgres'),
      args: ['-D', dataDir, '-c', `listen_addresses=${HOST}`, '-c', `port=${port}`, '-c', `unix_socket_directories=${dataDir}`,
        '-c', 'cluster_name=ehoff-cluster', '-c', 'max_connections=200', '-c', 'shared_buffers=128MB'],
      logFile: layout.postgres.logFile,
      pidFile: layout.postgres.pidFile,
      user,
    });
    pid = started.pid;
    await waitReady(layout, bin, started.exited);
  } else {
    await waitReady(layout, bin, () => false);
  }
  await ensureSchema(layout, db);
  return { ...db, pid };
}

async function waitReady(layout: ClusterLayout, bin: string, exited: () => boolean): Promise<void> {
  for (const deadline = Date.now() + 30_000; ; await sleep(200)) {
    if (exited()) throw new Error(`PostgreSQL exited during start-up:\n${await logTail(layout.postgres.logFile)}`);
    const ok = await run(join(bin, 'pg_isready'), ['-q', '-h', HOST, '-p', String(layout.postgres.port)]).then(() => true, () => false);
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`PostgreSQL did not accept connections on ${HOST}:${layout.postgres.port} within 30 s:\n${await logTail(layout.postgres.logFile)}`);
  }
}

/**
 * Both databases, created and brought to the schema of the server's version by its own SQL
 * tool (the schemas embedded in the tool are the module's schema/postgresql/v12): created and
 * set up at version 0.0 where missing, then `update-schema` on every `up` (a no-op when current).
 */
async function ensureSchema(layout: ClusterLayout, db: DatabaseAccess): Promise<void> {
  const env = { ...process.env, SQL_PASSWORD: db.password };
  const tool = (database: string, args: string[]) =>
    run(CLUSTER_BINARIES.sqlTool, ['--plugin', 'postgres12', '--endpoint', HOST, '--port', String(db.port), '--user', db.user, '--database', database, ...args], { env }).catch(
      (e: Error & { stderr?: string; stdout?: string }) => {
        throw new Error(`temporal-sql-tool ${args[0]} on ${database} failed: ${(e.stderr || e.stdout || e.message).trim().slice(-800)}`);
      },
    );
  for (const [database, schema] of [[DATABASES.default, 'temporal'], [DATABASES.visibility, 'visibility']] as const) {
    if (!(await query(db, 'postgres', `SELECT 1 FROM pg_database WHERE datname = '${database}'`))) await tool(database, ['create-database']);
    if (!(await query(db, database, `SELECT 1 FROM pg_tables WHERE tablename = 'schema_version'`))) await tool(database, ['setup-schema', '-v', '0.0']);
    await tool(database, ['update-schema', '--schema-name', `postgresql/v12/${schema}`]);
  }
}

/** Whether `sql` (a SELECT 1 …) finds a row in `database`. */
async function query(db: DatabaseAccess, database: string, sql: string): Promise<boolean> {
  const psql = join(await postgresBinDir(), 'psql');
  const { stdout } = await run(psql, ['-h', HOST, '-p', String(db.port), '-U', db.user, '-d', database, '-tAc', sql], {
    env: { ...process.env, PGPASSWORD: db.password },
  });
  return stdout.trim() === '1';
}

/** Stops the instance (fast shutdown: SIGINT), if it runs. Returns its PID. */
export async function stopPostgres(layout: ClusterLayout): Promise<number | undefined> {
  return stopDaemon(layout.postgres.pidFile, postgresNeedles(layout), 'SIGINT', 30_000);
}

/** Makes the data folder's parent traversable by the postgres user (0755), the rest stays 0700 by PostgreSQL's rule. */
export async function prepareStateDir(stateDir: string): Promise<void> {
  await mkdir(stateDir, { recursive: true });
  await chmod(stateDir, 0o755);
}
