import xxhash from 'xxhash-wasm';

/** xxHash64 (hex) for frame and batch checksums: corruption detection, not authentication. */
let hasher: Awaited<ReturnType<typeof xxhash>> | undefined;

export async function loadChecksum(): Promise<(data: Uint8Array) => string> {
  hasher ??= await xxhash();
  const h = hasher;
  return (data) => h.h64Raw(data).toString(16).padStart(16, '0');
}

export async function loadHash64(): Promise<(data: Uint8Array) => bigint> {
  hasher ??= await xxhash();
  const h = hasher;
  return (data) => h.h64Raw(data);
}
