import { FrameType } from '../../engine/wire/frames.js';
import { mutateBatch, type MutatedBatch } from './batch-mutations.js';
import { mutateBytes } from './byte-mutations.js';
import { drawChunking, type Chunking } from './chunking.js';
import type { FuzzCorpus } from './corpus.js';
import { Draw } from './draw.js';
import { randomStream } from './random-streams.js';
import { mutateFrames, type FrameList } from './stream-mutations.js';
import { helloFrame } from './valid-streams.js';

export const CASE_KINDS = ['random', 'mutated', 'batch', 'socket'] as const;
export type CaseKind = (typeof CASE_KINDS)[number];

/** Bytes for the frame decoder (in memory or over TLS), in the reads they arrive in. */
export interface StreamInput {
  kind: 'random' | 'mutated' | 'socket';
  /** The handoff the stream's hello names: its own per case, so no case meets another's connection. */
  handoffId: string;
  bytes: Buffer;
  chunking: Chunking;
  mutations: string[];
  /** Unchanged from a valid stream: then the receiver must take all of it, not merely survive it. */
  intact: boolean;
  /** In memory: start at the hello's frame limit and raise it at the hello, as the server does; or take any size from the start. */
  helloLimit: boolean;
  /**
   * Over TLS: the sender waits a moment after this read, the one that ends the hello, as a real
   * source does while it encodes its first batch; without it the server meets the next frame
   * before it has taken the hello.
   */
  pauseAfterRead?: number;
}

/** One batch frame's payload for decodePayload and then the applier. */
export interface BatchInput {
  kind: 'batch';
  batch: MutatedBatch;
  intact: boolean;
}

export type FuzzInput = StreamInput | BatchInput;

/** Case `index`'s kind: every `socketEvery`-th over TLS, the rest in turn. */
export function kindOf(index: number, socketEvery: number): CaseKind {
  if (index % socketEvery === socketEvery - 1) return 'socket';
  const inMemory = index - Math.floor(index / socketEvery);
  return CASE_KINDS[inMemory % 3]!;
}

/** Reads over TLS cost a record each: fewer of them than in memory, where they cost a call. */
const MAX_PIECES = { memory: 20_000, socket: 1_500 } as const;

export async function drawInput(corpus: FuzzCorpus, seed: number, index: number, socketEvery: number): Promise<FuzzInput> {
  const draw = new Draw(seed, index);
  const kind = kindOf(index, socketEvery);
  const handoffId = `fz-${seed}-${index}`;
  if (kind === 'batch') {
    const batch = await mutateBatch(draw, draw.pick(corpus.batches), corpus.checksum);
    return { kind, batch, intact: batch.mutations.length === 0 };
  }
  const helloLimit = kind === 'socket' || draw.chance(0.5);
  if (kind === 'random' || (kind === 'socket' && draw.chance(0.25))) {
    const { bytes, helloBytes, what } = randomStream(draw, handoffId);
    return { kind, handoffId, bytes, ...readsOf(draw, kind, bytes, helloBytes), mutations: [what], intact: false, helloLimit };
  }
  const stream = draw.weighted(corpus.streams.map((s) => [s.weight, s] as const));
  const list: FrameList = { frames: [helloFrame(handoffId), ...stream.frames], types: [FrameType.Hello, ...stream.types] };
  const mutations = [`from '${stream.name}'`];
  const edits = draw.chance(0.1) ? 0 : draw.weighted([
    [6, 1],
    [3, 2],
    [1, 4],
  ] as const);
  let blind = 0;
  for (let n = 0; n < edits; n++) {
    if (draw.chance(0.6)) mutations.push(mutateFrames(draw, list, corpus.streams, corpus.checksum));
    else blind++;
  }
  const frameStarts: number[] = [];
  let bytes: Buffer = Buffer.concat(list.frames);
  for (let at = 0, i = 0; i < list.frames.length; at += list.frames[i]!.length, i++) frameStarts.push(at);
  // Blind edits after the framing-aware ones, on the bytes as they would leave.
  for (; blind > 0; blind--) {
    const m = mutateBytes(draw, bytes);
    bytes = m.bytes;
    mutations.push(m.what);
  }
  return { kind, handoffId, bytes, ...readsOf(draw, kind, bytes, Math.min(bytes.length, list.frames[0]?.length ?? 0), frameStarts), mutations, intact: edits === 0, helloLimit };
}

/** The reads `bytes` arrive in; over TLS mostly with a pause after the hello's (the hello's first `helloBytes`). */
function readsOf(draw: Draw, kind: CaseKind, bytes: Buffer, helloBytes: number, frameStarts: number[] = []): Pick<StreamInput, 'chunking' | 'pauseAfterRead'> {
  if (kind !== 'socket' || helloBytes === 0 || !draw.chance(0.8)) {
    return { chunking: drawChunking(draw, bytes.length, kind === 'socket' ? MAX_PIECES.socket : MAX_PIECES.memory, frameStarts) };
  }
  const hello = drawChunking(draw, helloBytes, 8);
  const rest = drawChunking(draw, bytes.length - helloBytes, MAX_PIECES.socket, frameStarts.map((at) => at - helloBytes).filter((at) => at > 0));
  return { chunking: [...hello, ...rest], pauseAfterRead: hello.length - 1 };
}
