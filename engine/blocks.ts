/** The unit of change tracking, dedup and transfer, for memory pages and disk blocks alike. */
export const BLOCK_SIZE = 4096;

export function blockCount(bytes: number): number {
  return Math.ceil(bytes / BLOCK_SIZE);
}
