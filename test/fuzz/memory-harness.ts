import { once } from 'node:events';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { applyBatch } from '../../engine/pipeline/batch-applier.js';
import { FrameDecoder, FrameType, HELLO_MAX_FRAME_BYTES, MAX_FRAME_BYTES, decodePayload, type Frame } from '../../engine/wire/frames.js';
import { batchFramePayload } from './batch-mutations.js';
import { BoundedStore } from './bounded-store.js';
import { cut } from './chunking.js';
import type { BatchInput, StreamInput } from './fuzz-inputs.js';
import { withinBound } from './time-bound.js';
import { PASSED, failed, verdictOnRefusal, verdictOnStores, worst, type Verdict } from './verdict.js';

/**
 * The receiving side without a socket: bytes in the drawn reads through a FrameDecoder, each
 * batch frame it yields applied to a bounded store, as the data plane does but for the
 * connection's bookkeeping (sequence numbers, the end frame's counts), which the socket cases
 * reach through the real server.
 * With the hello's limit, the limit is raised as the server raises it, from the consumer, which
 * may be after the decoder read on past the hello: whether a valid stream is taken then is the
 * server's to show (the socket cases), so here such a stream need only be survived.
 */
export async function runStreamInMemory(input: StreamInput, boundMs: number): Promise<Verdict> {
  const store = new BoundedStore();
  const base = new BoundedStore();
  const decoder = new FrameDecoder(input.helloLimit ? HELLO_MAX_FRAME_BYTES : MAX_FRAME_BYTES);
  const reads = cut(input.bytes, input.chunking);
  const progress = { fed: 0 };
  const consume = async (): Promise<Verdict> => {
    try {
      void feed(decoder, reads, progress);
      for await (const f of decoder as AsyncIterable<Frame>) {
        if (f.type === FrameType.Batch) await applyBatch(f.header, f.payload, store, base);
      }
      return PASSED;
    } catch (err) {
      return verdictOnRefusal(err, input.intact);
    }
  };
  const outcome = await withinBound(consume(), boundMs);
  decoder.destroy();
  if (outcome === 'timed out') return failed('hang', `the decoder and applier did not finish within ${boundMs} ms (${progress.fed} of ${reads.length} reads fed)`);
  return worst(outcome.value, verdictOnStores(store.violations, base.violations));
}

/**
 * Reads reach a server's decoder one event-loop turn apart at best; fed here a few per turn, so
 * that a decoder slow on some reads is seen to be, and stopped at the case's bound, rather than
 * holding the thread until the watchdog ends the run.
 */
const READS_PER_TURN = 64;

async function feed(decoder: FrameDecoder, reads: Buffer[], progress: { fed: number }): Promise<void> {
  const closed = once(decoder, 'close').catch(() => undefined);
  for (const [n, read] of reads.entries()) {
    if (decoder.destroyed) return;
    progress.fed = n;
    if (!decoder.write(read)) await Promise.race([once(decoder, 'drain').catch(() => undefined), closed]);
    if (n % READS_PER_TURN === READS_PER_TURN - 1) await nextTurn();
  }
  if (!decoder.destroyed) decoder.end();
}

/** One batch frame's payload through the decoder's batch parsing and the applier, as the data plane hands it on. */
export async function runBatchInMemory(input: BatchInput, boundMs: number): Promise<Verdict> {
  const store = new BoundedStore();
  const base = new BoundedStore();
  const apply = async (): Promise<Verdict> => {
    try {
      const frame = decodePayload(FrameType.Batch, batchFramePayload(input.batch));
      if (frame.type !== FrameType.Batch) return failed('crash', `a batch frame decoded as type ${frame.type}`);
      const applied = await applyBatch(frame.header, frame.payload, store, base);
      if (applied !== frame.header.chunks) return failed('crash', `applied ${applied} chunks of a batch whose header says ${frame.header.chunks}`);
      return PASSED;
    } catch (err) {
      return verdictOnRefusal(err, input.intact);
    }
  };
  const outcome = await withinBound(apply(), boundMs);
  if (outcome === 'timed out') return failed('hang', `the applier did not finish within ${boundMs} ms`);
  return worst(outcome.value, verdictOnStores(store.violations, base.violations));
}
