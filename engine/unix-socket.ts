import { connect, type Socket } from 'node:net';

/** A connected unix socket, or the connect error (a socket not yet created, a refusal). */
export function connectUnix(path: string): Promise<Socket> {
  return new Promise<Socket>((resolve, reject) => {
    const s = connect(path);
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}
