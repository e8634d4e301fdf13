import { execFile } from 'node:child_process';
import { X509Certificate, randomBytes } from 'node:crypto';
import { access, chmod, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { join, resolve } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { cloudletNameSchema } from '../engine/names.js';
import { loadCloudletTls, type CloudletTls, type CloudletTlsFiles } from '../engine/wire/cloudlet-tls.js';
import { DEV_PKI_DIR } from './paths.js';

const run = promisify(execFile);

/**
 * A development site CA and one certificate per cloudlet, made with the openssl command line as
 * an operator would: EC P-256 keys (0600, in a 0700 folder), the cloudlet's name as the
 * certificate's subject CN and its one DNS subjectAltName (that name is the identity the data
 * plane checks), for both server and client use. Idempotent: what is there and still valid is
 * kept, so a site's CA outlives its runs; a missing cloudlet is issued from the same CA.
 * A real site brings its own CA and issues the same shape of certificate (see the README).
 */
export async function ensureDevPki(dir: string, cloudlets: string[]): Promise<Record<string, CloudletTlsFiles>> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
  // Two processes topping up one folder at once (a test and the worker it starts) must not
  // each make a CA: one does, under a lock, and the other then finds it.
  return withLock(join(dir, '.lock'), () => topUp(dir, cloudlets));
}

async function topUp(dir: string, cloudlets: string[]): Promise<Record<string, CloudletTlsFiles>> {
  const caKey = join(dir, 'ca.key');
  const caCert = join(dir, 'ca.crt');
  if (!(await usable(caCert, caKey))) {
    await rm(caKey, { force: true });
    await openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', caKey, '-out', caCert, '-days', '3650',
      '-subj', `/CN=ehoff development site CA ${randomBytes(4).toString('hex')}`,
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
    await chmod(caKey, 0o600);
  }
  const files: Record<string, CloudletTlsFiles> = {};
  for (const name of cloudlets) {
    cloudletNameSchema.parse(name);
    const f = { certFile: join(dir, `${name}.crt`), keyFile: join(dir, `${name}.key`), caFile: caCert };
    if (!(await usable(f.certFile, f.keyFile, caCert, name))) await issue(dir, name, f, caKey, caCert);
    files[name] = f;
  }
  return files;
}

/** Cloudlet `name`'s certificate, key and CA from the development site CA (made if missing): for in-process cloudlets of tests and benchmarks. */
export async function devCloudletTls(name: string, dir = DEV_PKI_DIR): Promise<CloudletTls> {
  const files = await ensureDevPki(dir, [name]);
  return loadCloudletTls(name, files[name]!);
}

async function issue(dir: string, name: string, f: CloudletTlsFiles, caKey: string, caCert: string): Promise<void> {
  const csr = join(dir, `${name}.csr`);
  const ext = join(dir, `${name}.ext`);
  await rm(f.keyFile, { force: true });
  await openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', f.keyFile, '-out', csr, '-subj', `/CN=${name}`]);
  await chmod(f.keyFile, 0o600);
  await writeFile(ext, `basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:${name}\n`);
  try {
    await openssl(['x509', '-req', '-in', csr, '-CA', caCert, '-CAkey', caKey, '-CAcreateserial', '-days', '825', '-sha256', '-extfile', ext, '-out', f.certFile]);
  } finally {
    await rm(csr, { force: true });
    await rm(ext, { force: true });
  }
}

/** Both files there, the certificate not expiring within a day, and (for a cloudlet's) issued by the CA for that name. */
async function usable(certFile: string, keyFile: string, caFile?: string, name?: string): Promise<boolean> {
  try {
    await access(keyFile);
    const cert = new X509Certificate(await readFile(certFile));
    if (Date.parse(cert.validTo) < Date.now() + 86_400_000) return false;
    if (caFile && name) {
      const ca = new X509Certificate(await readFile(caFile));
      return cert.checkIssued(ca) && cert.verify(ca.publicKey) && cert.checkHost(name) === name;
    }
    return true;
  } catch {
    return false;
  }
}

/** Runs `work` holding the lock folder `path` (mkdir is atomic); a lock older than a minute is a crashed holder's. */
async function withLock<T>(path: string, work: () => Promise<T>): Promise<T> {
  for (const deadline = Date.now() + 60_000; ; ) {
    try {
      await mkdir(path);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const age = await stat(path).then((s) => Date.now() - s.mtimeMs, () => 0);
      if (age > 60_000) await rm(path, { recursive: true, force: true });
      else if (Date.now() > deadline) throw new Error(`the PKI folder's lock ${path} is held for over a minute`);
      else await sleep(50);
    }
  }
  try {
    return await work();
  } finally {
    await rm(path, { recursive: true, force: true });
  }
}

async function openssl(args: string[]): Promise<void> {
  try {
    await run('openssl', args);
  } catch (err) {
    const e = err as Error & { stderr?: string };
    throw new Error(`openssl ${args[0]} failed: ${(e.stderr ?? e.message).trim().slice(0, 500)}`);
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { dir: { type: 'string' }, cloudlets: { type: 'string' } } });
  if (!values.dir || !values.cloudlets) {
    console.error('usage: npm run pki -- --dir DIR --cloudlets A,B,C   (creates or tops up a development site CA and one certificate per cloudlet)');
    process.exit(2);
  }
  const names = values.cloudlets.split(',').map((s) => s.trim()).filter(Boolean);
  for (const n of names) {
    const r = cloudletNameSchema.safeParse(n);
    if (!r.success) {
      console.error(`--cloudlets: '${n}': ${r.error.issues[0]?.message}`);
      process.exit(2);
    }
  }
  const files = await ensureDevPki(resolve(values.dir), names);
  for (const [name, f] of Object.entries(files)) console.log(`${name}: --tls-cert ${f.certFile} --tls-key ${f.keyFile} --tls-ca ${f.caFile}`);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((err: Error) => {
    console.error(`dev-pki: ${err.message}`);
    process.exit(1);
  });
}
