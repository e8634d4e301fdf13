import type { Draw } from './draw.js';

/** A mutated copy and what was done, for the failure report. */
export interface Mutated {
  bytes: Buffer;
  what: string;
}

/** Values at the edges of what a length, count or index field holds: where off-by-ones live. */
export const EDGE_U32 = [0, 1, 2, 3, 4, 5, 0x7f, 0x80, 0xff, 0x100, 0xfff, 0x1000, 0x1001, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff] as const;

/** One blind change to `bytes`, of the kinds a corrupting link or a hostile peer makes. */
export function mutateBytes(draw: Draw, bytes: Buffer): Mutated {
  const at = () => draw.int(0, Math.max(0, bytes.length - 1));
  const op = draw.weighted([
    [4, 'flip'],
    [2, 'set'],
    [2, 'u32'],
    [1, 'truncate'],
    [1, 'insert'],
    [1, 'delete'],
    [1, 'copy'],
  ] as const);
  const insert = (): Mutated => {
    const where = bytes.length ? at() : 0;
    const junk = draw.bytes(draw.pick([1, 4, 5, 64, 4096]));
    return { bytes: Buffer.concat([bytes.subarray(0, where), junk, bytes.subarray(where)]), what: `insert ${junk.length} random bytes at ${where}` };
  };
  if (bytes.length === 0) return insert();
  const out = Buffer.from(bytes);
  switch (op) {
    case 'insert':
      return insert();
    case 'flip': {
      const flips = draw.int(1, 8);
      const where: number[] = [];
      for (let k = 0; k < flips; k++) {
        const i = at();
        out[i]! ^= 1 << draw.int(0, 7);
        where.push(i);
      }
      return { bytes: out, what: `flip bits at ${where.join(',')}` };
    }
    case 'set': {
      const i = at();
      const v = draw.pick([0, 1, 0x7f, 0x80, 0xfe, 0xff]);
      out[i] = v;
      return { bytes: out, what: `byte ${i} = ${v}` };
    }
    case 'u32': {
      const i = draw.int(0, Math.max(0, out.length - 4));
      const v = draw.pick(EDGE_U32);
      if (out.length >= 4) out.writeUInt32LE(v, i);
      return { bytes: out, what: `u32 at ${i} = ${v}` };
    }
    case 'truncate': {
      const n = at();
      return { bytes: out.subarray(0, n), what: `truncate to ${n} bytes` };
    }
    case 'delete': {
      const from = at();
      const n = draw.int(1, Math.min(4096, bytes.length - from));
      return { bytes: Buffer.concat([out.subarray(0, from), out.subarray(from + n)]), what: `delete ${n} bytes at ${from}` };
    }
    case 'copy': {
      const from = at();
      const to = at();
      const n = Math.min(draw.int(1, 256), bytes.length - Math.max(from, to));
      out.copy(out, to, from, from + n);
      return { bytes: out, what: `copy ${n} bytes from ${from} over ${to}` };
    }
  }
}
