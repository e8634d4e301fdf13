import { createHash } from 'node:crypto';
import { connect } from 'node:net';
import { open, readFile } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { pipeline } from 'node:stream/promises';
import { BLOCK_SIZE } from '../blocks.js';
import { HandoffError } from '../errors.js';
import type { DiskOverlay } from '../disk/disk-overlay.js';
import { FrameDecoder, FrameType, WIRE_PROTOCOL, WIRE_VERSION, encodeFrame, type Ack, type Frame } from './frames.js';

export interface DataEndpoint {
  host: string;
  port: number;
  token: string;
}

/** The stopped VM's overlay: everything the target needs on top of the base image. */
export interface OutgoingOverlay {
  handoffId: string;
  deviceStatePath: string;
  ramPath: string;
  memoryPages: number[];
  disk: DiskOverlay;
  diskBlocks: number[];
}

const BLOCKS_PER_FRAME = 256;

async function* overlayFrames(o: OutgoingOverlay, token: string): AsyncGenerator<Buffer> {
  yield encodeFrame({ type: FrameType.Hello, hello: { protocol: WIRE_PROTOCOL, version: WIRE_VERSION, handoffId: o.handoffId, token } });
  const deviceState = await readFile(o.deviceStatePath);
  for (let off = 0; off < deviceState.length; off += 1 << 20) {
    yield encodeFrame({ type: FrameType.DeviceState, data: deviceState.subarray(off, off + (1 << 20)) });
  }
  const ram = await open(o.ramPath, 'r');
  try {
    for (let k = 0; k < o.memoryPages.length; k += BLOCKS_PER_FRAME) {
      const indices = o.memoryPages.slice(k, k + BLOCKS_PER_FRAME);
      const blocks = Buffer.alloc(indices.length * BLOCK_SIZE);
      await Promise.all(indices.map((page, n) => ram.read(blocks, n * BLOCK_SIZE, BLOCK_SIZE, page * BLOCK_SIZE)));
      yield encodeFrame({ type: FrameType.MemoryBlocks, indices, blocks });
    }
  } finally {
    await ram.close();
  }
  for (let k = 0; k < o.diskBlocks.length; k += BLOCKS_PER_FRAME) {
    const indices = o.diskBlocks.slice(k, k + BLOCKS_PER_FRAME);
    const blocks = Buffer.alloc(indices.length * BLOCK_SIZE);
    for (const [n, index] of indices.entries()) await o.disk.readBlock(index, blocks.subarray(n * BLOCK_SIZE, (n + 1) * BLOCK_SIZE));
    yield encodeFrame({ type: FrameType.DiskBlocks, indices, blocks });
  }
  yield encodeFrame({
    type: FrameType.End,
    end: {
      memoryBlocks: o.memoryPages.length,
      diskBlocks: o.diskBlocks.length,
      deviceStateBytes: deviceState.length,
      deviceStateSha256: createHash('sha256').update(deviceState).digest('hex'),
    },
  });
}

/**
 * Streams the overlay to the target's data plane and waits for its acknowledgement. The socket's
 * backpressure paces the reads: nothing holds more than one frame of the image in memory.
 */
export async function sendOverlay(endpoint: DataEndpoint, overlay: OutgoingOverlay): Promise<{ bytesSent: number; ack: Ack }> {
  const socket = connect({ host: endpoint.host, port: endpoint.port });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', (e) => reject(new Error(`cannot reach the target's data plane at ${endpoint.host}:${endpoint.port}: ${e.message}`)));
  });
  socket.setNoDelay(true);
  const replies = socket.pipe(new FrameDecoder());
  const reply = (async () => {
    for await (const f of replies as AsyncIterable<Frame>) {
      if (f.type === FrameType.Ack) return f.ack;
      if (f.type === FrameType.Error) throw new HandoffError('PROTOCOL', `target refused the overlay: ${f.error.message}`);
      throw new HandoffError('PROTOCOL', `unexpected frame type ${f.type} from the target`);
    }
    throw new HandoffError('PROTOCOL', 'target closed the data connection without an acknowledgement');
  })();
  reply.catch(() => undefined);
  try {
    // end: false keeps the socket writable-open until the target has answered.
    try {
      await pipeline(Readable.from(overlayFrames(overlay, endpoint.token)), socket, { end: false });
    } catch (err) {
      // A target that refuses the stream says why before it closes; that beats "EPIPE".
      const why = await Promise.race([reply.then(() => undefined, (e: unknown) => e), sleep(1_000)]);
      throw why ?? err;
    }
    const ack = await reply;
    return { bytesSent: socket.bytesWritten, ack };
  } finally {
    socket.destroy();
  }
}
