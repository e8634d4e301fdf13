/**
 * Writes a cpio archive in the "newc" format the kernel unpacks as an initramfs. Owners are root
 * and times are zero, so the same inputs give the same bytes (and the same base image id), and
 * device nodes need no mknod privileges.
 */
export type CpioEntry =
  | { kind: 'dir'; path: string; mode?: number }
  | { kind: 'file'; path: string; data: Buffer; mode?: number }
  | { kind: 'chardev'; path: string; major: number; minor: number; mode?: number };

const hex8 = (n: number) => n.toString(16).padStart(8, '0');
const pad4 = (n: number) => Buffer.alloc((4 - (n % 4)) % 4);

function record(ino: number, name: string, mode: number, data: Buffer, rdev: [number, number] = [0, 0]): Buffer[] {
  const nameBytes = Buffer.from(name + '\0');
  const header = Buffer.from(
    '070701' +
      [ino, mode, 0, 0, mode & 0o040000 ? 2 : 1, 0, data.length, 0, 0, rdev[0], rdev[1], nameBytes.length, 0].map(hex8).join(''),
  );
  return [header, nameBytes, pad4(header.length + nameBytes.length), data, pad4(data.length)];
}

export function cpioNewc(entries: CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  entries.forEach((e, i) => {
    const name = e.path.replace(/^\/+/, '');
    if (e.kind === 'dir') parts.push(...record(i + 1, name, 0o040000 | (e.mode ?? 0o755), Buffer.alloc(0)));
    else if (e.kind === 'file') parts.push(...record(i + 1, name, 0o100000 | (e.mode ?? 0o644), e.data));
    else parts.push(...record(i + 1, name, 0o020000 | (e.mode ?? 0o600), Buffer.alloc(0), [e.major, e.minor]));
  });
  parts.push(...record(0, 'TRAILER!!!', 0, Buffer.alloc(0)));
  return Buffer.concat(parts);
}
