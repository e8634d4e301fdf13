import { X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { PeerCertificate } from 'node:tls';

/**
 * A cloudlet's identity on the data plane: its certificate and key, and the site CA that issued
 * every cloudlet's. A cloudlet's name is its certificate's DNS subjectAltName (the CN says the
 * same); the data plane checks that name against the handoff, not merely that the peer has some
 * certificate of the site — a handoff's stream is taken only from its source cloudlet, and the
 * source talks only to its target.
 */
export interface CloudletTls {
  cert: Buffer;
  key: Buffer;
  ca: Buffer;
}

/** Where a cloudlet's certificate, key and the site CA are (PEM files). */
export interface CloudletTlsFiles {
  certFile: string;
  keyFile: string;
  caFile: string;
}

/**
 * Reads the files and checks them against each other and the cloudlet's name, so a worker given
 * the wrong certificate says so at start, not at its first handoff.
 */
export async function loadCloudletTls(name: string, files: CloudletTlsFiles): Promise<CloudletTls> {
  const read = async (what: string, file: string) => {
    try {
      return await readFile(file);
    } catch (err) {
      throw new Error(`cloudlet ${name}: cannot read its TLS ${what} at ${file}: ${(err as Error).message}`);
    }
  };
  const tls = { cert: await read('certificate', files.certFile), key: await read('key', files.keyFile), ca: await read('CA certificate', files.caFile) };
  let cert: X509Certificate;
  let ca: X509Certificate;
  try {
    cert = new X509Certificate(tls.cert);
    ca = new X509Certificate(tls.ca);
  } catch (err) {
    throw new Error(`cloudlet ${name}: ${files.certFile} or ${files.caFile} is not a PEM certificate: ${(err as Error).message}`);
  }
  if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) throw new Error(`cloudlet ${name}: certificate ${files.certFile} was not issued by the CA in ${files.caFile}`);
  if (!namesCloudlet(cert, name)) throw new Error(`cloudlet ${name}: certificate ${files.certFile} names ${cert.subjectAltName ?? cert.subject}, not DNS:${name}`);
  if (Date.parse(cert.validTo) < Date.now()) throw new Error(`cloudlet ${name}: certificate ${files.certFile} expired on ${cert.validTo}`);
  return tls;
}

/** The TLS files from the environment, for a worker not given them by flag. */
export function tlsFilesFromEnv(env: NodeJS.ProcessEnv = process.env): Partial<CloudletTlsFiles> {
  return { certFile: env.EHOFF_TLS_CERT, keyFile: env.EHOFF_TLS_KEY, caFile: env.EHOFF_TLS_CA };
}

/** Whether `cert` is cloudlet `name`'s: its DNS subjectAltName, exactly (no wildcard stands for a cloudlet). */
export function namesCloudlet(cert: X509Certificate, name: string): boolean {
  return cert.checkHost(name, { wildcards: false, subject: 'never' }) === name;
}

/**
 * The check a source applies to the server it reached: the chain was verified by TLS against the
 * site CA; this makes sure it is the target cloudlet the handoff named, whatever address it had.
 */
export function expectCloudlet(name: string): (host: string, cert: PeerCertificate) => Error | undefined {
  return (_host, cert) => {
    if (!cert.raw) return new Error(`the data plane showed no certificate; expected cloudlet ${name}'s`);
    return namesCloudlet(new X509Certificate(cert.raw), name) ? undefined : new Error(`the data plane's certificate names ${cert.subjectaltname ?? 'nothing'}, not cloudlet ${name}`);
  };
}
