import { z } from 'zod';

/**
 * A mode: how each chunk is delta-encoded against the base chunk at the same offset, and how
 * batches are compressed. Pure (no Node imports): the workflow decides modes with it.
 */
export const DELTAS = ['none', 'xor', 'fossil'] as const;
export const CODECS = ['none', 'gzip', 'zstd', 'xz'] as const;
export type Delta = (typeof DELTAS)[number];
export type CodecName = (typeof CODECS)[number];

export const LEVELS: Record<CodecName, readonly number[]> = {
  none: [0],
  gzip: [1, 6, 9],
  // 15 and 16 fill the gap between 9 (fast, greedy-lazy) and 19 (optimal parser at ~2 MB/s a
  // core): on kvstore's 1 MiB batches zstd-15 sends 14% fewer bytes than zstd-9 at 15 MB/s a
  // core, zstd-16 (btopt, the first optimal-parser level) 17% fewer at 6.6 MB/s; 19 gains only 2% more for
  // 3× the CPU. Measured with `zstd -b` on batches of a captured overlay (issue 14's note).
  zstd: [1, 3, 9, 15, 16, 19],
  xz: [1, 6, 9],
};

export interface Mode {
  delta: Delta;
  codec: CodecName;
  level: number;
}

/** "xor/zstd-3", "none/none": the one spelling used in signals, history, frames and reports. */
export type ModeId = string;

export function modeId(m: Mode): ModeId {
  return `${m.delta}/${m.codec === 'none' ? 'none' : `${m.codec}-${m.level}`}`;
}

const MODE_ID = /^(none|xor|fossil)\/(none|(gzip|zstd|xz)-(\d{1,2}))$/;

export const modeIdSchema = z.string().refine((s) => parseModeIdOrUndefined(s) !== undefined, {
  message: 'a mode is <delta>/<codec>-<level> with delta none|xor|fossil and codec gzip 1,6,9 | zstd 1,3,9,15,16,19 | xz 1,6,9, or <delta>/none',
});

function parseModeIdOrUndefined(id: string): Mode | undefined {
  const m = MODE_ID.exec(id);
  if (!m) return undefined;
  const delta = m[1] as Delta;
  if (m[2] === 'none') return { delta, codec: 'none', level: 0 };
  const codec = m[3] as CodecName;
  const level = Number(m[4]);
  return LEVELS[codec].includes(level) ? { delta, codec, level } : undefined;
}

export function parseModeId(id: string): Mode {
  const mode = parseModeIdOrUndefined(id);
  if (!mode) throw new Error(`unknown mode '${id}'`);
  return mode;
}

/** Every mode the system may choose between. */
export const ALL_MODES: readonly Mode[] = DELTAS.flatMap((delta) =>
  CODECS.flatMap((codec) => LEVELS[codec].map((level) => ({ delta, codec, level }))),
);

/**
 * Where a handoff starts before it has measured anything: cheap, and good at most rates. No
 * delta: XOR only pays where the same-offset base page resembles the new one, and against an
 * unrelated base page it turns text into noise (seen on the demo: r 0.89 for xor/zstd-3 where
 * none/zstd-3 gave 0.19). The adaptation finds XOR where it does pay.
 */
export const DEFAULT_MODE: Mode = { delta: 'none', codec: 'zstd', level: 3 };

/**
 * The mode for the epoch sent with the VM stopped: there every CPU-second of encoding is
 * downtime, and a few MB gain little from a heavier codec. Keeps the stream's delta if it is
 * cheap (none, xor) and its codec if it is (none, gzip-1, zstd up to 3), else none/zstd-3.
 * (A demo run sent its stop epoch in fossil/xz-1, chosen on a sampled P four times too high:
 * 1.6 s of downtime encoding 3.9 MB.)
 */
export function stopMode(current: ModeId): ModeId {
  const m = parseModeId(current);
  const cheapDelta = m.delta === 'none' || m.delta === 'xor';
  const cheapCodec = m.codec === 'none' || (m.codec === 'gzip' && m.level === 1) || (m.codec === 'zstd' && m.level <= 3);
  return cheapDelta && cheapCodec ? current : modeId(DEFAULT_MODE);
}
