import type { Socket } from 'node:net';

/**
 * Connections in their TLS handshake, capped per peer address and in all: what a peer without a
 * certificate can make a listener hold, so that a flood from one address does not crowd out a
 * source's handshake from another. A handshake in progress holds a few tens of KB.
 */
export class HandshakeLimiter {
  private readonly byAddress = new Map<string, number>();
  private total = 0;
  /** By the connection's peer address and port (the raw socket and the TLS one share them). */
  private readonly pending = new Map<string, () => void>();

  constructor(private readonly perAddress: number, private readonly inAll: number) {}

  /** A raw connection accepted: false if it must be closed at once; counted until secured or closed. */
  admit(raw: Socket): boolean {
    const from = raw.remoteAddress ?? '?';
    const fromThere = this.byAddress.get(from) ?? 0;
    if (fromThere >= this.perAddress || this.total >= this.inAll) return false;
    this.byAddress.set(from, fromThere + 1);
    this.total++;
    let counted = true;
    const settle = () => {
      if (!counted) return;
      counted = false;
      this.total--;
      const left = (this.byAddress.get(from) ?? 1) - 1;
      if (left > 0) this.byAddress.set(from, left);
      else this.byAddress.delete(from);
    };
    const key = `${from}:${raw.remotePort}`;
    this.pending.set(key, settle);
    raw.once('close', () => {
      settle();
      this.pending.delete(key);
    });
    return true;
  }

  /** The connection's handshake is done: it no longer counts. */
  secured(socket: { remoteAddress?: string | undefined; remotePort?: number | undefined }): void {
    this.pending.get(`${socket.remoteAddress}:${socket.remotePort}`)?.();
  }
}
