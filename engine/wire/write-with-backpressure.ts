import type { Writable } from 'node:stream';

/**
 * Writes `data` and, when the stream's buffer is full, waits for it to drain; fails with
 * `closed()` if the stream is gone or closes first (a peer's socket, a helper's stdin).
 */
export function writeWithBackpressure(stream: Writable, data: Uint8Array, closed: () => Error): Promise<void> {
  if (stream.destroyed) return Promise.reject(closed());
  if (stream.write(data)) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const done = (err?: Error) => {
      stream.off('drain', onDrain);
      stream.off('close', onClose);
      if (err) reject(err);
      else resolve();
    };
    const onDrain = () => done();
    const onClose = () => done(closed());
    stream.on('drain', onDrain);
    stream.on('close', onClose);
  });
}
