import { z } from 'zod';
import { machineSpecSchema } from '../vm/machine.js';

/**
 * The VM host's declared formats: the record a worker writes before it starts a host (what the
 * host runs, and where, read back by a restarted worker), and the requests and replies on the
 * host's unix socket — one JSON object per line. Version 1.
 */
export const HOST_PROTOCOL_VERSION = 1;

export const hostFilesSchema = z.object({
  dir: z.string(),
  ramFile: z.string(),
  diskOverlay: z.string(),
  deviceState: z.string(),
  mountPoint: z.string(),
  qmpSocket: z.string(),
  serialSocket: z.string(),
  serialLog: z.string(),
  /** The host's own control socket and log. */
  hostSocket: z.string(),
  hostLog: z.string(),
});
export type VmFiles = z.infer<typeof hostFilesSchema>;

/**
 * Beside the RAM file, on the same tmpfs: what the source's stream attempts last sent per chunk
 * (SentChunkCache.inFile), so that a worker's crash does not cost the XORs of a resumed stream.
 */
export function sentChunksFile(files: Pick<VmFiles, 'ramFile'>): string {
  return files.ramFile.replace(/\.ram$/, '') + '.sent';
}

/** How the host's QEMU starts: from a saved device state (a launch), or waiting for one (a handoff's target). */
export const hostStartSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('from-device-state'), deviceState: z.string() }),
  z.object({ kind: z.literal('incoming'), handoffId: z.string() }),
]);

export const hostRecordSchema = z.object({
  version: z.literal(HOST_PROTOCOL_VERSION),
  vmId: z.string(),
  cloudlet: z.string(),
  baseImageId: z.string(),
  machine: machineSpecSchema,
  kernel: z.string(),
  initrd: z.string(),
  baseDisk: z.string(),
  diskSizeBytes: z.number().int().positive(),
  files: hostFilesSchema,
  start: hostStartSchema,
});
export type HostRecord = z.infer<typeof hostRecordSchema>;

/** The file in a VM's folder that names its host; written before the host is started. */
export const HOST_RECORD_FILE = 'host.json';
/**
 * The host's and its QEMU's PIDs, written by the host once it serves: what a sweep ends a host
 * that no longer answers by (each checked against its command line first).
 */
export const HOST_PIDS_FILE = 'host.pids.json';
export const hostPidsSchema = z.object({ hostPid: z.number().int(), qemuPid: z.number().int().nullable() });
/**
 * Written by an incoming VM's host before it continues the VM: from then on that copy is the
 * VM's (the target committed), and a worker that finds the host dead reports the VM lost.
 */
export const HOST_CONTINUED_FILE = 'continued';
/** A marker in every host's command line, checked before a sweep signals a recorded PID. */
export const HOST_PROCESS_MARKER = 'vm-host-main';

/** What a host says of itself and its VM. */
export const hostStatusSchema = z.object({
  vmId: z.string(),
  hostPid: z.number().int(),
  qemuPid: z.number().int().nullable(),
  /** QEMU's run state, or `exited` with the reason in `exitInfo`. */
  runState: z.string(),
  exitInfo: z.string().nullable(),
  start: hostStartSchema,
  /** An incoming VM was continued here: from then on it is this cloudlet's copy. */
  continued: z.boolean(),
  dirtyBlocks: z.number().int(),
  diskWrites: z.number().int(),
});
export type HostStatus = z.infer<typeof hostStatusSchema>;

const file = z.object({ file: z.string() });
const none = z.object({}).strict();

/** Each method's arguments; the replies' shapes are in `HostReplies`. */
export const hostMethodArgs = {
  status: none,
  pause: none,
  cont: none,
  saveDeviceState: file,
  loadDeviceState: file,
  /** Every disk block that differs (or may differ) from the base, ascending. */
  dirtyBlocks: none,
  /** Blocks written since the previous call, ascending; starts a new epoch. */
  takeEpochDirty: none,
  /** Blocks the caller wrote into the overlay file itself (a target assembling a disk). */
  markWritten: z.object({ indices: z.array(z.number().int().min(0)) }),
  /** Post-copy: blocks the disk lacks until filled; the guest's reads of them wait. */
  markMissing: z.object({ indices: z.array(z.number().int().min(0)) }),
  /** Post-copy: the blocks still missing, ascending (what a restarted worker goes on fetching). */
  missingBlocks: none,
  /** Post-copy: fetched blocks (base64, 4 KiB each), put in where still missing. */
  fillBlocks: z.object({ blocks: z.array(z.object({ index: z.number().int().min(0), data: z.string().max(8192) })).max(256) }),
  /** Post-copy: the missing blocks the guest has waited on since the last call; waits up to `waitMs` for one. */
  awaitDemand: z.object({ waitMs: z.number().int().min(0).max(60_000) }),
  flush: none,
  /** Ends QEMU, unmounts the disk, removes the VM's files; the host exits after replying. */
  destroy: none,
} as const;
export type HostMethod = keyof typeof hostMethodArgs;

export interface HostReplies {
  status: HostStatus;
  pause: null;
  cont: null;
  saveDeviceState: null;
  loadDeviceState: null;
  dirtyBlocks: number[];
  takeEpochDirty: number[];
  markWritten: null;
  markMissing: null;
  missingBlocks: number[];
  /** Of the blocks given, those put in, and those the guest had written whole meanwhile (left as the guest wrote them). */
  fillBlocks: { filled: number[]; dropped: number[] };
  awaitDemand: number[];
  flush: null;
  destroy: null;
}

export const hostRequestSchema = z.object({
  id: z.number().int(),
  method: z.enum(Object.keys(hostMethodArgs) as [HostMethod, ...HostMethod[]]),
  args: z.unknown().optional(),
});
export type HostRequest = z.infer<typeof hostRequestSchema>;

export const hostReplySchema = z.union([
  z.object({ id: z.number().int(), ok: z.literal(true), result: z.unknown() }),
  z.object({ id: z.number().int(), ok: z.literal(false), error: z.object({ code: z.string().nullable(), message: z.string() }) }),
]);
export type HostReply = z.infer<typeof hostReplySchema>;
