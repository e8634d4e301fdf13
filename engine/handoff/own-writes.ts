import { fstatSync } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';

/**
 * Notices writes to a file by anything but its owner, by its modification time: the owner's
 * writes go through `write`, which reads the time before and after; a time before that is not
 * the one left by the owner's previous write means someone else wrote in between. (tmpfs keeps
 * fine-grained times for a file whose time is read, so two writes do not share one.) What it
 * cannot see is a foreign write inside one of the owner's own, between its two reads: the
 * stop-time check compares the time once more (TargetHandoffs.finalize).
 */
export class OwnWrites {
  /** Someone else wrote the file since `watch`. */
  foreign = false;

  private constructor(
    private readonly file: FileHandle,
    private lastMtimeNs: bigint,
  ) {}

  static async watch(file: FileHandle): Promise<OwnWrites> {
    return new OwnWrites(file, (await file.stat({ bigint: true })).mtimeNs);
  }

  async write<T>(own: () => Promise<T>): Promise<T> {
    if (this.mtimeNs() !== this.lastMtimeNs) this.foreign = true;
    const result = await own();
    this.lastMtimeNs = this.mtimeNs();
    return result;
  }

  /**
   * Read in place, not through the I/O pool: on tmpfs an fstat is microseconds, and two pool
   * trips per batch queued behind the batch's own writes on the stopped VM's path.
   */
  private mtimeNs(): bigint {
    return fstatSync(this.file.fd, { bigint: true }).mtimeNs;
  }
}
