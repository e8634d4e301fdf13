import Fuse, { type Handlers } from 'fuse-native';
import { rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { DiskOverlay } from './disk-overlay.js';

export const DISK_FILE_NAME = 'disk.img';

/**
 * Serves one DiskOverlay as `<mountPoint>/disk.img` through FUSE, so QEMU uses a plain raw file
 * while every write lands in the overlay and marks its blocks dirty. The serving process must
 * never do synchronous I/O on its own mount (it would wait on itself).
 */
export class FuseDisk {
  private constructor(
    readonly mountPoint: string,
    private readonly fuse: Fuse,
  ) {}

  get diskPath(): string {
    return join(this.mountPoint, DISK_FILE_NAME);
  }

  static async mount(mountPoint: string, disk: DiskOverlay): Promise<FuseDisk> {
    // Reads and writes never time out: one of a block a post-copy still fetches waits for it (over
    // a cut link, as long as the link is cut), and fuse-native's default (15 s) would answer the
    // guest ETIMEDOUT while the handler still goes on to fill the kernel's buffer.
    const fuse = new Fuse(mountPoint, diskHandlers(disk), { force: true, mkdir: true, fsname: 'ehoff-disk', timeout: { default: 15_000, read: false, write: false } });
    await new Promise<void>((resolve, reject) =>
      fuse.mount((err) => (err ? reject(new Error(`cannot mount FUSE disk at ${mountPoint}: ${err.message}`)) : resolve())),
    );
    return new FuseDisk(mountPoint, fuse);
  }

  async unmount(): Promise<void> {
    await new Promise<void>((resolve, reject) =>
      this.fuse.unmount((err) => (err ? reject(new Error(`cannot unmount ${this.mountPoint}: ${err.message}`)) : resolve())),
    );
    await rmdir(this.mountPoint).catch(() => undefined);
  }
}

function diskHandlers(disk: DiskOverlay): Handlers {
  const now = new Date();
  const fileStat = () => ({ mtime: now, atime: now, ctime: now, size: disk.sizeBytes, mode: 0o100600, uid: 0, gid: 0, nlink: 1 });
  const dirStat = { mtime: now, atime: now, ctime: now, size: 4096, mode: 0o40700, uid: 0, gid: 0, nlink: 2 };
  const isDisk = (path: string) => path === `/${DISK_FILE_NAME}`;
  const fail = (err: unknown) => {
    process.emitWarning(`FUSE disk I/O failed: ${String(err)}`);
    return Fuse.EIO;
  };
  return {
    getattr(path, cb) {
      if (path === '/') return cb(0, dirStat);
      if (isDisk(path)) return cb(0, fileStat());
      cb(Fuse.ENOENT);
    },
    fgetattr(path, _fd, cb) {
      if (isDisk(path)) return cb(0, fileStat());
      cb(Fuse.ENOENT);
    },
    readdir(path, cb) {
      if (path === '/') return cb(0, [DISK_FILE_NAME]);
      cb(Fuse.ENOENT);
    },
    open(path, _flags, cb) {
      if (isDisk(path)) return cb(0, 1);
      cb(Fuse.ENOENT);
    },
    release(_path, _fd, cb) {
      cb(0);
    },
    read(_path, _fd, buf, len, pos, cb) {
      disk.read(buf, len, pos).then(cb, (err) => cb(fail(err)));
    },
    write(_path, _fd, buf, len, pos, cb) {
      disk.write(buf, len, pos).then(cb, (err) => cb((err as { code?: string }).code === 'ENOSPC' ? Fuse.ENOSPC : fail(err)));
    },
    flush(_path, _fd, cb) {
      cb(0);
    },
    fsync(_path, _dataSync, _fd, cb) {
      disk.flush().then(() => cb(0), (err) => cb(fail(err)));
    },
    truncate(_path, size, cb) {
      // The disk's size is fixed; QEMU may "truncate" to the same size when it opens the image.
      cb(size === disk.sizeBytes ? 0 : Fuse.EPERM);
    },
    ftruncate(_path, _fd, size, cb) {
      cb(size === disk.sizeBytes ? 0 : Fuse.EPERM);
    },
  };
}
