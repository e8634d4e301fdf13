/**
 * What a post-copy switch leaves the target to fetch: the memory pages it holds stale, ascending.
 * Each arrives with its xxHash64 from the source's stopped copy, taken right after the pause, and
 * is checked against it before the guest may read it.
 */
export interface PostCopyPlan {
  pages: Uint32Array;
}

/**
 * The one index space of a post-copy's chunks, on the wire and in a plan: memory page p is chunk
 * p, disk block b is chunk memoryPages + b. Requests and page frames carry chunks; each side
 * knows the memory's size.
 */
export function chunkOfDiskBlock(block: number, memoryPages: number): number {
  return memoryPages + block;
}

/** Stale pages and stale disk blocks (both ascending) as one ascending list of chunks: the pages, then the blocks past the memory. */
export function chunksOf(pages: ArrayLike<number>, diskBlocks: ArrayLike<number>, memoryPages: number): Uint32Array {
  const chunks = new Uint32Array(pages.length + diskBlocks.length);
  chunks.set(pages);
  for (let k = 0; k < diskBlocks.length; k++) chunks[pages.length + k] = chunkOfDiskBlock(diskBlocks[k]!, memoryPages);
  return chunks;
}

/** A plan's chunks split back into memory pages and disk blocks (both ascending). */
export function splitChunks(chunks: Uint32Array, memoryPages: number): { pages: Uint32Array; diskBlocks: Uint32Array } {
  const at = lowerBound(chunks, memoryPages);
  return { pages: chunks.subarray(0, at), diskBlocks: chunks.subarray(at).map((c) => c - memoryPages) };
}

/** A page's position in the plan, or -1 when the plan does not name it. */
export function planPosition(plan: Pick<PostCopyPlan, 'pages'>, index: number): number {
  const at = lowerBound(plan.pages, index);
  return at < plan.pages.length && plan.pages[at] === index ? at : -1;
}

/** The first position in ascending `a` whose value is ≥ `v` (a.length when none is). */
export function lowerBound(a: Uint32Array, v: number): number {
  let lo = 0;
  let hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (a[mid]! < v) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Ascending page indices as (first, count) runs. */
export function pageRuns(pages: ArrayLike<number>): Array<[number, number]> {
  const runs: Array<[number, number]> = [];
  for (let k = 0; k < pages.length; k++) {
    const i = pages[k]!;
    const last = runs.at(-1);
    if (last && last[0] + last[1] === i) last[1]++;
    else runs.push([i, 1]);
  }
  return runs;
}

/** (first, count) runs as the page indices they cover; more than `limit` of them is refused. */
export function runPages(runs: ReadonlyArray<readonly [number, number]>, limit: number): Uint32Array {
  const total = runs.reduce((n, [, count]) => n + count, 0);
  if (total > limit) throw new RangeError(`${total} pages asked for where at most ${limit} are to come`);
  const pages = new Uint32Array(total);
  let k = 0;
  for (const [first, count] of runs) for (let i = 0; i < count; i++) pages[k++] = first + i;
  return pages;
}
