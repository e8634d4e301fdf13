import type { VmHostClient } from '../host/vm-host-client.js';
import type { DiskFill } from './page-fetcher.js';

/** Blocks per fillBlocks request (the host's limit is 256): one request carries at most 256 KiB as base64. */
const FILL_BATCH = 64;

/** A disk post-copy's fills and demands, through the VM host that serves the disk (vm-host-server.ts). */
export function hostDiskFill(host: VmHostClient): DiskFill {
  return {
    markMissing: async (blocks) => void (await host.call('markMissing', { indices: blocks })),
    missingBlocks: () => host.call('missingBlocks'),
    fill: async (blocks) => {
      for (let k = 0; k < blocks.length; k += FILL_BATCH) {
        await host.call('fillBlocks', { blocks: blocks.slice(k, k + FILL_BATCH).map(({ index, data }) => ({ index, data: data.toString('base64') })) });
      }
    },
    // The host holds the request up to waitMs: the reply's own deadline is longer.
    awaitDemand: (waitMs) => host.call('awaitDemand', { waitMs }, waitMs + 10_000),
  };
}
