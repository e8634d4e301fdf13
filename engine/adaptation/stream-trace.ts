import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import type { StreamControl } from '../handoff/stream-control.js';
import type { PrecopyDecision } from '../handoff/precopy-policy.js';
import type { StreamMeasurements } from './measurements.js';
import { modeIdSchema } from './mode.js';

/**
 * What one stream saw, second by second: every measurements report (P and r per mode from the
 * stream and its samples, R, the pre-copy's progress and dirty rate) and every pre-copy
 * decision. Enough to run another mode policy over the same conditions offline (trace-replay.ts).
 */
export interface StreamTrace {
  version: 1;
  handoffId: string;
  attempt: number;
  startedAt: string;
  ticks: StreamMeasurements[];
  decisions: PrecopyDecision[];
}

const modeMeasurementSchema = z.object({
  mode: modeIdSchema,
  P_MBps: z.number().nonnegative(),
  ratio: z.number().nonnegative(),
  from: z.enum(['stream', 'sample']),
  bytes: z.number().nonnegative(),
  P_from: z.enum(['achieved', 'pool', 'relative']).optional(),
  P_lowMBps: z.number().nonnegative().optional(),
  ratioHigh: z.number().nonnegative().optional(),
});

const tickSchema = z.object({
  atMs: z.number().nonnegative(),
  mode: modeIdSchema,
  R_Mbps: z.number().nonnegative().nullable(),
  threads: z.number().int().positive(),
  inputBytes: z.number().nonnegative(),
  wireBytes: z.number().nonnegative(),
  modes: z.array(modeMeasurementSchema),
  precopy: z
    .object({
      epoch: z.number().int().nonnegative(),
      live: z.boolean(),
      epochChunks: z.number().int().nonnegative().nullable(),
      chunksSent: z.number().int().nonnegative(),
      dirtyBytesPerS: z.number().nonnegative().nullable(),
      predictedDowntimeMs: z.number().nullable(),
    })
    .optional(),
});

const decisionSchema = z.object({
  epoch: z.number().int().nonnegative(),
  action: z.enum(['continue', 'slow-guest', 'catch-up', 'stop']),
  reason: z.string(),
  pendingChunks: z.number().int().nonnegative(),
  estimateMs: z.number(),
  budgetMs: z.number(),
  R_Mbps: z.number().nullable(),
  ratio: z.number(),
  dirtyBytesPerS: z.number().nullable(),
  guestPausedShare: z.number(),
  atMs: z.number(),
});

/** A trace file as read back (from disk: checked, not trusted). */
export const streamTraceSchema = z.object({
  version: z.literal(1),
  handoffId: z.string().min(1),
  attempt: z.number().int().positive(),
  startedAt: z.string(),
  ticks: z.array(tickSchema).min(1, 'a trace needs at least one tick'),
  decisions: z.array(decisionSchema),
});

/** Reads a trace from its JSON text; the error names the field that is wrong. */
export function parseStreamTrace(text: string, where: string): StreamTrace {
  const parsed = streamTraceSchema.safeParse(JSON.parse(text));
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new Error(`${where}: not a stream trace: ${issue.path.join('.') || '(top)'}: ${issue.message}`);
  }
  return parsed.data as StreamTrace;
}

/** `control`, with every report and decision that passes through it kept for a trace. */
export function tracedControl(control: StreamControl, handoffId: string, attempt: number): { control: StreamControl; trace: () => StreamTrace } {
  const trace: StreamTrace = { version: 1, handoffId, attempt, startedAt: new Date().toISOString(), ticks: [], decisions: [] };
  return {
    control: {
      ...control,
      report: (m) => {
        trace.ticks.push(structuredClone(m));
        control.report(m);
      },
      decided: (d) => {
        trace.decisions.push({ ...d });
        control.decided?.(d);
      },
    },
    trace: () => trace,
  };
}

/** Writes `trace` as `<dir>/<handoff id>-attempt-<n>.json` and returns the path. */
export async function writeStreamTrace(dir: string, trace: StreamTrace): Promise<string> {
  await mkdir(dir, { recursive: true });
  const path = join(dir, `${trace.handoffId.replace(/[^a-z0-9.-]+/gi, '-')}-attempt-${trace.attempt}.json`);
  await writeFile(path, JSON.stringify(trace) + '\n');
  return path;
}
