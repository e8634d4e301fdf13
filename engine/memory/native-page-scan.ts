import { createRequire } from 'node:module';

/** The changed-pages scan in C (native/page-scan), built by `npm ci`. */
export interface NativePageScan {
  /** Pages in [from, to) of the file whose xxHash64 differs from `held[page]`. */
  changedPages(path: string, held: BigUint64Array, from: number, to: number): Uint32Array;
  /** The same for the listed pages only (ascending). */
  changedAmong(path: string, held: BigUint64Array, among: Uint32Array): Uint32Array;
  hash64(data: Uint8Array): bigint;
}

let loaded: { scan: NativePageScan | null; why: string } | undefined;

/**
 * The native scanner, or null where it cannot load (then the scan runs in wasm, the same hash at
 * about half the speed). EHOFF_PAGE_SCAN=wasm forces the fallback, for comparing the two.
 */
export function nativePageScan(): NativePageScan | null {
  loaded ??= load();
  return loaded.scan;
}

/** Which scanner runs, and why: a worker prints it at start. */
export function pageScanImplementation(): string {
  loaded ??= load();
  return loaded.scan ? 'native (pread + xxHash64 in C)' : `wasm (${loaded.why})`;
}

function load(): { scan: NativePageScan | null; why: string } {
  if (process.env.EHOFF_PAGE_SCAN === 'wasm') return { scan: null, why: 'EHOFF_PAGE_SCAN=wasm' };
  try {
    return { scan: createRequire(import.meta.url)('ehoff-page-scan') as NativePageScan, why: '' };
  } catch (err) {
    return { scan: null, why: `the native scanner did not load: ${(err as Error).message.split('\n')[0]}; run npm ci` };
  }
}
