import { z } from 'zod';
import { machineSpecSchema } from '../vm/machine.js';
import { baseImageIdSchema } from '../names.js';

/**
 * A base image: what every cloudlet caches so that only a VM's overlay has to move. Versioned and
 * named by its content: `id` is derived from the digests of its parts.
 */
const fileRef = z.object({ name: z.string().regex(/^[\w.-]+$/), sha256: z.string().regex(/^[0-9a-f]{64}$/) });
const imageRef = z.object({
  name: z.string().regex(/^[\w.-]+$/),
  sizeBytes: z.number().int().positive(),
  digest: z.string().regex(/^[0-9a-f]{64}$/),
});

export const BASE_IMAGE_FORMAT_VERSION = 1;

export const baseImageManifestSchema = z.object({
  formatVersion: z.literal(BASE_IMAGE_FORMAT_VERSION),
  id: baseImageIdSchema,
  createdAt: z.string(),
  recipe: z.string(),
  machine: machineSpecSchema,
  kernel: fileRef,
  initrd: fileRef,
  deviceState: fileRef,
  memory: imageRef,
  disk: imageRef,
  /** The disk's non-zero block hashes: lets a cloudlet digest base + overlay without a full scan. */
  diskBlockHashes: fileRef,
});
export type BaseImageManifest = z.infer<typeof baseImageManifestSchema>;

export const MANIFEST_FILE = 'manifest.json';
export const FILE_NAMES = {
  kernel: 'vmlinuz',
  initrd: 'initrd.img',
  deviceState: 'device.state',
  memory: 'memory.img',
  disk: 'disk.img',
  diskBlockHashes: 'disk.hashes',
} as const;
