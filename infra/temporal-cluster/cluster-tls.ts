import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { chmod, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ensureDevPki } from '../dev-pki.js';
import { DEV_PKI_DIR } from '../paths.js';

const run = promisify(execFile);

export interface ClusterTlsFiles {
  /** The site CA: the frontend trusts client certificates it issued, and clients check the frontend against it. */
  caFile: string;
  /** The cluster's own certificate (server and client use): the frontend's, and the one its system worker, UI server and admin CLI present. */
  certFile: string;
  keyFile: string;
  /** The name clients verify the frontend as (also a SAN: IP 127.0.0.1). */
  serverName: string;
}

export const FRONTEND_SERVER_NAME = 'localhost';

/**
 * The frontend's certificate from the development site CA (made if missing, see dev-pki.ts),
 * with SANs DNS:localhost and IP:127.0.0.1, for serverAuth and clientAuth. Kept while still
 * valid for a day and issued by the current CA; else issued again. Cloudlet certificates from
 * the same CA are accepted as client certificates, so workers connect with the ones they have.
 */
export async function ensureClusterTls(tlsDir: string, pkiDir = DEV_PKI_DIR): Promise<ClusterTlsFiles> {
  await ensureDevPki(pkiDir, []);
  const caFile = join(pkiDir, 'ca.crt');
  const caKey = join(pkiDir, 'ca.key');
  const files: ClusterTlsFiles = { caFile, certFile: join(tlsDir, 'frontend.crt'), keyFile: join(tlsDir, 'frontend.key'), serverName: FRONTEND_SERVER_NAME };
  if (await stillGood(files)) return files;
  await mkdir(tlsDir, { recursive: true, mode: 0o700 });
  const csr = join(tlsDir, 'frontend.csr');
  const ext = join(tlsDir, 'frontend.ext');
  try {
    await run('openssl', ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', files.keyFile, '-out', csr, '-subj', '/CN=ehoff temporal cluster frontend']);
    await chmod(files.keyFile, 0o600);
    await writeFile(ext, 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n');
    await run('openssl', ['x509', '-req', '-in', csr, '-CA', caFile, '-CAkey', caKey, '-CAcreateserial', '-days', '825', '-sha256', '-extfile', ext, '-out', files.certFile]);
  } finally {
    await rm(csr, { force: true });
    await rm(ext, { force: true });
  }
  return files;
}

async function stillGood(f: ClusterTlsFiles): Promise<boolean> {
  try {
    await readFile(f.keyFile);
    const cert = new X509Certificate(await readFile(f.certFile));
    const ca = new X509Certificate(await readFile(f.caFile));
    return Date.parse(cert.validTo) > Date.now() + 86_400_000 && cert.checkIssued(ca) && cert.verify(ca.publicKey) && cert.checkIP('127.0.0.1') === '127.0.0.1';
  } catch {
    return false;
  }
}
