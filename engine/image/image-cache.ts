import { createHash } from 'node:crypto';
import { copyFile, link, mkdir, readFile, readdir, rename, rm, stat, chmod } from 'node:fs/promises';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { HandoffError } from '../errors.js';
import {
  FILE_NAMES,
  MANIFEST_FILE,
  baseImageManifestSchema,
  type BaseImageManifest,
} from './base-image.js';
import { decodeBlockHashes, digestFromBlockHashes, digestOfFile, sha256OfFile, type BlockHashes } from './image-digest.js';

const run = promisify(execFile);

/** A base image present in a cloudlet's cache, with the paths of its parts. */
export interface CachedBaseImage {
  manifest: BaseImageManifest;
  dir: string;
  path(part: keyof typeof FILE_NAMES): string;
  diskBlockHashes(): Promise<BlockHashes>;
}

/** The id a manifest must carry: a digest over everything that defines the image. */
export function baseImageIdOf(m: Omit<BaseImageManifest, 'id' | 'createdAt' | 'recipe'>): string {
  const identity = JSON.stringify([
    m.formatVersion, m.machine, m.kernel.sha256, m.initrd.sha256, m.deviceState.sha256,
    m.memory.sizeBytes, m.memory.digest, m.disk.sizeBytes, m.disk.digest, m.diskBlockHashes.sha256,
  ]);
  return `base-${createHash('sha256').update(identity).digest('hex').slice(0, 16)}`;
}

/**
 * One cloudlet's cache of base images, a folder per image id. Images enter it only through
 * `install`, which checks every part against the manifest, so a cached image can be trusted by id.
 */
export class ImageCache {
  private readonly loaded = new Map<string, CachedBaseImage>();

  constructor(readonly dir: string) {}

  async has(id: string): Promise<boolean> {
    return stat(join(this.dir, id, MANIFEST_FILE)).then(() => true, () => false);
  }

  /** The ids of the images installed here. */
  async list(): Promise<string[]> {
    const names = await readdir(this.dir).catch(() => [] as string[]);
    const held = await Promise.all(names.filter((n) => /^base-[0-9a-f]{16}$/.test(n)).map(async (n) => ((await this.has(n)) ? n : undefined)));
    return held.filter((n): n is string => n !== undefined).sort();
  }

  async get(id: string): Promise<CachedBaseImage> {
    const hit = this.loaded.get(id);
    if (hit) return hit;
    const dir = join(this.dir, id);
    let raw: string;
    try {
      raw = await readFile(join(dir, MANIFEST_FILE), 'utf8');
    } catch {
      throw new HandoffError('BASE_IMAGE_MISSING', `base image ${id} is not in the image cache at ${this.dir}`);
    }
    const parsed = baseImageManifestSchema.safeParse(JSON.parse(raw));
    if (!parsed.success) throw new HandoffError('BASE_IMAGE_CORRUPT', `manifest of ${id}: ${parsed.error.message}`);
    const image = cachedImage(dir, parsed.data);
    this.loaded.set(id, image);
    return image;
  }

  /**
   * Moves a folder whose every part was verified against its manifest as it arrived (base-transfer.ts)
   * into the cache, without reading them all again: the folder must be in this cache's folder.
   */
  async adoptFetched(dir: string, manifest: BaseImageManifest): Promise<CachedBaseImage> {
    if (await this.has(manifest.id)) return this.get(manifest.id);
    for (const part of Object.values(FILE_NAMES)) await chmod(join(dir, part), 0o444);
    await rename(dir, join(this.dir, manifest.id));
    return this.get(manifest.id);
  }

  /** Copies (hard-links where possible) a built image into the cache after verifying every part. */
  async install(sourceDir: string): Promise<CachedBaseImage> {
    const manifest = baseImageManifestSchema.parse(JSON.parse(await readFile(join(sourceDir, MANIFEST_FILE), 'utf8')));
    if (await this.has(manifest.id)) return this.get(manifest.id);
    await mkdir(this.dir, { recursive: true });
    const staging = join(this.dir, `.staging-${manifest.id}-${process.pid}`);
    await rm(staging, { recursive: true, force: true });
    await mkdir(staging);
    try {
      for (const part of Object.values(FILE_NAMES)) await placeFile(join(sourceDir, part), join(staging, part));
      await copyFile(join(sourceDir, MANIFEST_FILE), join(staging, MANIFEST_FILE));
      await verifyImage(staging, manifest);
      await rename(staging, join(this.dir, manifest.id));
    } catch (err) {
      await rm(staging, { recursive: true, force: true });
      throw err;
    }
    return this.get(manifest.id);
  }
}

function cachedImage(dir: string, manifest: BaseImageManifest): CachedBaseImage {
  let hashes: Promise<BlockHashes> | undefined;
  return {
    manifest,
    dir,
    path: (part) => join(dir, FILE_NAMES[part]),
    diskBlockHashes: () =>
      (hashes ??= readFile(join(dir, FILE_NAMES.diskBlockHashes)).then((b) => decodeBlockHashes(b, manifest.disk.sizeBytes))),
  };
}

/** Base files are never written after install: link them read-only, or copy keeping holes. */
async function placeFile(from: string, to: string): Promise<void> {
  try {
    await link(from, to);
  } catch {
    await run('cp', ['--sparse=always', from, to]);
  }
  await chmod(to, 0o444);
}

export async function verifyImage(dir: string, m: BaseImageManifest): Promise<void> {
  const checks: Array<[string, Promise<string>, string]> = [
    ['kernel', sha256OfFile(join(dir, FILE_NAMES.kernel)), m.kernel.sha256],
    ['initrd', sha256OfFile(join(dir, FILE_NAMES.initrd)), m.initrd.sha256],
    ['device state', sha256OfFile(join(dir, FILE_NAMES.deviceState)), m.deviceState.sha256],
    ['disk block hashes', sha256OfFile(join(dir, FILE_NAMES.diskBlockHashes)), m.diskBlockHashes.sha256],
    ['memory', digestOfFile(join(dir, FILE_NAMES.memory), m.memory.sizeBytes), m.memory.digest],
    ['disk', digestOfFile(join(dir, FILE_NAMES.disk), m.disk.sizeBytes), m.disk.digest],
  ];
  for (const [what, actual, expected] of checks) {
    if ((await actual) !== expected) {
      throw new HandoffError('BASE_IMAGE_CORRUPT', `base image ${m.id}: ${what} digest ${await actual} does not match the manifest's ${expected}`);
    }
  }
  const indexed = decodeBlockHashes(await readFile(join(dir, FILE_NAMES.diskBlockHashes)), m.disk.sizeBytes);
  if (digestFromBlockHashes(m.disk.sizeBytes, indexed) !== m.disk.digest) {
    throw new HandoffError('BASE_IMAGE_CORRUPT', `base image ${m.id}: disk block hashes do not add up to the disk digest`);
  }
  const idCheck = baseImageIdOf(m);
  if (idCheck !== m.id) throw new HandoffError('BASE_IMAGE_CORRUPT', `base image id ${m.id} does not match its content (${idCheck})`);
}
