import { MAX_FRAME_BYTES } from '../../engine/wire/frames.js';
import { CORPUS_MODES } from './valid-batches.js';
import type { Draw } from './draw.js';

/**
 * Field-level changes to a control frame's or batch header's JSON: the schemas are the
 * boundary, so the values are the ones either side of each bound they draw (negative, zero,
 * one past a count, past 2⁵³, the wrong type) rather than random text that fails at the parse.
 */
export function mutateJsonObject(draw: Draw, text: string): { text: string; what: string } {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { text, what: 'JSON edit skipped (not JSON any more)' };
  }
  if (!value || typeof value !== 'object' || Array.isArray(value)) return { text, what: 'JSON edit skipped (not an object)' };
  const obj = value as Record<string, unknown>;
  const keys = Object.keys(obj);
  const op = draw.weighted([
    [8, 'set'],
    [1, 'delete'],
    [1, 'add'],
  ] as const);
  if (op === 'add' || keys.length === 0) {
    const key = draw.pick(['__proto__', 'constructor', 'extra', 'seq', 'attempt']);
    const v = interestingValue(draw, undefined);
    // Assigned through JSON text, so that a "__proto__" key is a plain own key as a peer would send it.
    const added = `${text.replace(/\}\s*$/, '')}${keys.length ? ',' : ''}${JSON.stringify(key)}:${JSON.stringify(v) ?? 'null'}}`;
    return { text: added, what: `add field ${key} = ${JSON.stringify(v)}` };
  }
  const key = draw.pick(keys);
  if (op === 'delete') {
    delete obj[key];
    return { text: JSON.stringify(obj), what: `delete field ${key}` };
  }
  const v = interestingValue(draw, obj[key]);
  obj[key] = v;
  return { text: JSON.stringify(obj), what: `field ${key} = ${JSON.stringify(v)?.slice(0, 80)}` };
}

function interestingValue(draw: Draw, current: unknown): unknown {
  if (typeof current === 'number' && draw.chance(0.5)) return current + draw.pick([-1, 1, 2, 4096, -current - 1]);
  if (typeof current === 'string' && draw.chance(0.5)) {
    return draw.pick([
      '',
      current.slice(0, -1),
      `${current}0`,
      current.toUpperCase(),
      '0'.repeat(current.length),
      'g'.repeat(current.length),
      ...CORPUS_MODES,
      'xor/zstd-4',
      'none/xz-9',
    ]);
  }
  return draw.pick([
    -1, 0, 1, 2, 4095, 4096, 4097, MAX_FRAME_BYTES - 1, MAX_FRAME_BYTES, MAX_FRAME_BYTES + 1,
    2 ** 31, 2 ** 32, 2 ** 53, 2 ** 53 + 2, 1.5, 1e308, -0, '1', '', null, true, [], {}, 'x'.repeat(5000),
  ]);
}
