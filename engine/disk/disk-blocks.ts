/**
 * A disk's changed blocks, for reading: a DiskOverlay in the process that serves it, or a
 * HostedDisk in a worker beside the VM's host.
 */
export interface DiskBlocks {
  /** Blocks that differ (or may differ) from the base, ascending. */
  dirtyBlocks(): number[] | Promise<number[]>;
  readBlock(index: number, into?: Buffer): Promise<Buffer>;
}
