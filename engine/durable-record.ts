import { open, readFile, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { z } from 'zod';

/**
 * One small JSON record on disk, replaced whole and durably: written to a temporary file, synced,
 * renamed over the old one, and the folder synced, so a crash at any instant leaves the old
 * record or the new one, never a torn one. What a handoff's phase is kept in (libvirt keeps its
 * migration phase in the domain's status XML the same way).
 */
export class DurableRecord<T> {
  private static writes = 0;
  /** Writes of this record through this object, one at a time, in order. */
  private writing: Promise<void> = Promise.resolve();

  constructor(
    readonly path: string,
    private readonly schema: z.ZodType<T>,
  ) {}

  write(value: T): Promise<void> {
    const next = this.writing.then(() => this.replace(value));
    this.writing = next.catch(() => undefined);
    return next;
  }

  private async replace(value: T): Promise<void> {
    // Named per write: two writers of one record (two processes, or two objects in one) never
    // share a temporary file.
    const tmp = `${this.path}.${process.pid}.${++DurableRecord.writes}.tmp`;
    const file = await open(tmp, 'w');
    try {
      await file.writeFile(JSON.stringify(value));
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(tmp, this.path);
    const dir = await open(dirname(this.path), 'r');
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  }

  /** The record, or undefined if there is none; a record that does not parse is an error naming the file. */
  async read(): Promise<T | undefined> {
    const text = await readFile(this.path, 'utf8').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return undefined;
      throw err;
    });
    if (text === undefined) return undefined;
    const parsed = this.schema.safeParse(JSON.parse(text));
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new Error(`record ${this.path}: field ${issue?.path.join('.') || '(root)'}: ${issue?.message}`);
    }
    return parsed.data;
  }

  async remove(): Promise<void> {
    await rm(this.path, { force: true });
  }
}
