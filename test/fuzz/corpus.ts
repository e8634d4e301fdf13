import { loadChecksum } from '../../engine/pipeline/checksum.js';
import { buildValidBatches, type ValidBatch } from './valid-batches.js';
import { buildValidStreams, type ValidStream } from './valid-streams.js';

/** The valid inputs every mutation starts from, built once per run from fixed seeds. */
export interface FuzzCorpus {
  batches: ValidBatch[];
  streams: ValidStream[];
  checksum: (data: Uint8Array) => string;
}

/** Every corpus mode encoded once, from fixed seeds: the same bytes every run, so a case replays. */
export async function buildCorpus(): Promise<FuzzCorpus> {
  const batches = await buildValidBatches();
  return { batches, streams: await buildValidStreams(batches), checksum: await loadChecksum() };
}

