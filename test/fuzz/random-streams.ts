import type { Draw } from './draw.js';
import { helloFrame } from './valid-streams.js';

/** Noise, bare or shaped as frames (plausible lengths, any type), after a valid hello or not. */
export function randomStream(draw: Draw, handoffId: string): { bytes: Buffer; helloBytes: number; what: string } {
  const hello = draw.chance(0.5) ? helloFrame(handoffId) : Buffer.alloc(0);
  const size = () => draw.pick([0, 1, 3, 4, 5, 16, 100, 4096, 65536]) + draw.int(0, 64);
  if (draw.chance(0.5)) {
    const bytes = draw.bytes(size());
    return { bytes: Buffer.concat([hello, bytes]), helloBytes: hello.length, what: `${hello.length ? 'hello, then ' : ''}${bytes.length} random bytes` };
  }
  const frames: Buffer[] = [];
  const described: string[] = [];
  for (let n = draw.int(1, 6); n > 0; n--) {
    const payload = draw.chance(0.3) ? Buffer.from(JSON.stringify({ seq: draw.int(-1, 3), attempt: draw.int(0, 2), x: 'y' })) : draw.bytes(size());
    const head = Buffer.alloc(5);
    head.writeUInt32LE(draw.chance(0.8) ? payload.length + 1 : draw.int(0, 0x7fffffff), 0);
    head.writeUInt8(draw.chance(0.8) ? draw.int(0, 13) : draw.int(0, 255), 4);
    frames.push(head, payload);
    described.push(`type ${head.readUInt8(4)} length ${head.readUInt32LE(0)}`);
  }
  return { bytes: Buffer.concat([hello, ...frames]), helloBytes: hello.length, what: `${hello.length ? 'hello, then ' : ''}random frames: ${described.join('; ')}` };
}
