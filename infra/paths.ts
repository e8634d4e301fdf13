import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Where the project keeps what it builds and downloads; one home for these paths. */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const CACHE_DIR = process.env.EHOFF_CACHE_DIR ?? join(REPO_ROOT, '.cache');
export const BASE_IMAGE_BUILD_DIR = join(CACHE_DIR, 'base-images');
export const GUEST_KERNEL_DIR = join(CACHE_DIR, 'guest-kernel');
export const GUEST_SOURCES_DIR = join(REPO_ROOT, 'infra', 'guest');
export const STATE_DIR = process.env.EHOFF_STATE_DIR ?? join(REPO_ROOT, '.state');
/** The development site CA and the cloudlets' certificates it issued (keys 0600, untracked). */
export const DEV_PKI_DIR = join(STATE_DIR, 'pki');
/** The WAN testbed's delay relay (infra/wan-delay/delay-relay.c), built by infra/setup.sh. */
export const DELAY_RELAY_BIN = join(CACHE_DIR, 'bin', 'ehoff-delay-relay');
/** The site's cloudlets, their places and capacities (engine/placement/site-topology.ts). */
export const SITE_TOPOLOGY_FILE = process.env.EHOFF_SITE_TOPOLOGY ?? join(REPO_ROOT, 'infra', 'site-topology.json');
/** Prefix of every temp file, mount point, socket and namespace the project creates. */
export const PREFIX = 'ehoff';
