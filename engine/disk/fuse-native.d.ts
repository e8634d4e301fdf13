// The subset of fuse-native 2.2 this project uses (the package ships no types).
declare module 'fuse-native' {
  type Cb<T extends unknown[] = []> = (code: number, ...rest: T) => void;
  export interface Stat {
    mtime: Date; atime: Date; ctime: Date; size: number; mode: number; uid: number; gid: number; nlink?: number;
  }
  export interface Handlers {
    init?(cb: Cb): void;
    getattr?(path: string, cb: Cb<[Stat?]>): void;
    fgetattr?(path: string, fd: number, cb: Cb<[Stat?]>): void;
    readdir?(path: string, cb: Cb<[string[]?]>): void;
    open?(path: string, flags: number, cb: Cb<[number?]>): void;
    release?(path: string, fd: number, cb: Cb): void;
    read?(path: string, fd: number, buf: Buffer, len: number, pos: number, cb: (bytes: number) => void): void;
    write?(path: string, fd: number, buf: Buffer, len: number, pos: number, cb: (bytes: number) => void): void;
    flush?(path: string, fd: number, cb: Cb): void;
    fsync?(path: string, dataSync: boolean, fd: number, cb: Cb): void;
    truncate?(path: string, size: number, cb: Cb): void;
    ftruncate?(path: string, fd: number, size: number, cb: Cb): void;
    statfs?(path: string, cb: Cb<[Record<string, number>?]>): void;
  }
  export interface Options {
    force?: boolean; mkdir?: boolean; debug?: boolean; allowOther?: boolean; fsname?: string; maxRead?: number;
    /** ms before an operation is answered ETIMEDOUT (default 15000); per operation, false for none. */
    timeout?: number | false | ({ default?: number } & Record<string, number | false | undefined>);
  }
  export default class Fuse {
    constructor(mnt: string, handlers: Handlers, opts?: Options);
    mount(cb: (err: Error | null) => void): void;
    unmount(cb: (err: Error | null) => void): void;
    static unmount(mnt: string, cb: (err: Error | null) => void): void;
    static ENOENT: number; static EIO: number; static EINVAL: number; static EPERM: number; static ENOSPC: number;
  }
}
