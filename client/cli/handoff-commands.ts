import type { Command } from 'commander';
import { WorkflowNotFoundError } from '@temporalio/client';
import { modeIdSchema } from '../../engine/adaptation/mode.js';
import { vmIdSchema } from '../../engine/names.js';
import { WORKFLOW_FAILURE } from '../../engine/contract.js';
import { capBandwidthSignal, describeInvalid, handoffInputSchema, pinModeSignal, streamControlQuery, unpinModeSignal } from '../../workflows/definitions.js';
import { progressPrinter, summarize } from '../progress-printer.js';
import { HandoffFailedError, InvalidRequestError, handoffWorkflowId, runHandoff } from '../start-handoff.js';
import { connect, type TemporalTarget } from './connect.js';
import { CliError, EXIT } from './exit-codes.js';

type Globals = () => TemporalTarget;

function vmArg(vm: string): string {
  const parsed = vmIdSchema.safeParse(vm);
  if (!parsed.success) throw new CliError(`'${vm}' is not a VM id: ${parsed.error.issues[0]?.message}`, EXIT.REJECTED);
  return parsed.data;
}

/** `trigger`, `cancel`, `pin-mode`, `cap`: starting a handoff and an operator's hand on one that runs. */
export function handoffCommands(program: Command, globals: Globals): void {
  program
    .command('trigger')
    .description('move a running VM to another cloudlet and follow it to the end (exit 0 moved, 1 failed and the VM runs on at the source, 3 failed after the commit: see `status`, 2 rejected)')
    .requiredOption('--vm <id>', 'the VM to move')
    .requiredOption('--from <cloudlet>', 'where it runs now')
    .requiredOption('--to <cloudlet>', 'where it is to run')
    .option('--pin <mode>', 'stream in this mode only (e.g. xor/zstd-3)')
    .option('--cap <mbps>', 'never send faster than this many Mbit/s', Number)
    .option('--post-copy <policy>', "auto: a pre-copy that will not converge switches to post-copy (the VM's memory is then split between the hosts until every page is in); never (default): it stops and copies the rest")
    .option('--json', 'print the handoff result as one JSON line at the end')
    .action(async (o: { vm: string; from: string; to: string; pin?: string; cap?: number; postCopy?: string; json?: boolean }) => {
      // Checked before connecting: a request that cannot be right is refused without a server.
      const request = handoffInputSchema.safeParse({
        vmId: o.vm, source: o.from, target: o.to,
        ...(o.pin !== undefined ? { pinnedMode: o.pin } : {}),
        ...(o.cap !== undefined ? { bandwidthCapMbps: o.cap } : {}),
        ...(o.postCopy !== undefined ? { postCopy: o.postCopy } : {}),
      });
      if (!request.success) throw new CliError(describeInvalid('handoff request', request.error), EXIT.REJECTED);
      const { client, close } = await connect(globals());
      try {
        const say = o.json ? (l: string) => console.error(l) : (l: string) => console.log(l);
        say(`handoff of ${o.vm} from ${o.from} to ${o.to}`);
        const result = await runHandoff(client, request.data, progressPrinter(say));
        for (const line of summarize(result)) say(line);
        if (o.json) console.log(JSON.stringify(result));
      } catch (err) {
        if (err instanceof InvalidRequestError) throw new CliError(`handoff rejected: ${err.message}`, EXIT.REJECTED);
        if (err instanceof HandoffFailedError) {
          throw new CliError(`handoff failed (${err.workflowId}): ${err.message}`, err.type === WORKFLOW_FAILURE.HANDOFF_FAILED ? EXIT.FAILED_AT_SOURCE : EXIT.FAILED_AFTER_COMMIT);
        }
        throw err;
      } finally {
        await close();
      }
    });

  program
    .command('cancel')
    .description("cancel a VM's handoff in flight: before its commit the VM runs on at the source; after it, the handoff completes")
    .requiredOption('--vm <id>', 'the VM whose handoff to cancel')
    .option('--json', 'print {"workflowId","cancelRequested":true} as one JSON line')
    .action(async (o: { vm: string; json?: boolean }) => {
      const vm = vmArg(o.vm);
      await withHandoff(globals(), vm, async (handle) => {
        await handle.cancel();
        console.log(o.json ? JSON.stringify({ workflowId: handoffWorkflowId(vm), cancelRequested: true }) : `asked ${handoffWorkflowId(vm)} to cancel`);
      });
    });

  program
    .command('pin-mode')
    .description("stream a VM's handoff in one mode from now on, or let the adaptation choose again")
    .requiredOption('--vm <id>', 'the VM whose handoff streams')
    .option('--mode <mode>', 'delta/codec-level, e.g. xor/zstd-3, fossil/xz-9, none/none')
    .option('--unpin', 'let the adaptation choose again')
    .option('--json', "print the stream's control state as one JSON line")
    .action(async (o: { vm: string; mode?: string; unpin?: boolean; json?: boolean }) => {
      const vm = vmArg(o.vm);
      if ((o.mode === undefined) === !o.unpin) throw new CliError('give exactly one of --mode <mode> or --unpin', EXIT.REJECTED);
      const mode = o.mode === undefined ? undefined : modeIdSchema.safeParse(o.mode);
      if (mode && !mode.success) throw new CliError(`--mode '${o.mode}': ${mode.error.issues[0]?.message}`, EXIT.REJECTED);
      await withHandoff(globals(), vm, async (handle) => {
        await (mode ? handle.signal(pinModeSignal, mode.data!) : handle.signal(unpinModeSignal));
        await printControl(handle, o.json);
      });
    });

  program
    .command('cap')
    .description("cap a VM's handoff stream to a bandwidth, or lift the cap")
    .requiredOption('--vm <id>', 'the VM whose handoff streams')
    .option('--mbps <n>', 'never send faster than this many Mbit/s', Number)
    .option('--lift', 'lift the cap')
    .option('--json', "print the stream's control state as one JSON line")
    .action(async (o: { vm: string; mbps?: number; lift?: boolean; json?: boolean }) => {
      const vm = vmArg(o.vm);
      if ((o.mbps === undefined) === !o.lift) throw new CliError('give exactly one of --mbps <n> or --lift', EXIT.REJECTED);
      if (o.mbps !== undefined && !(o.mbps > 0 && o.mbps <= 100_000)) throw new CliError(`--mbps must be a number of Mbit/s above 0 and at most 100000, got ${o.mbps}`, EXIT.REJECTED);
      await withHandoff(globals(), vm, async (handle) => {
        await handle.signal(capBandwidthSignal, o.mbps ?? null);
        await printControl(handle, o.json);
      });
    });
}

type Handle = ReturnType<Awaited<ReturnType<typeof connect>>['client']['workflow']['getHandle']>;

/** Runs `act` on the VM's running handoff, or says there is none. */
async function withHandoff(target: TemporalTarget, vm: string, act: (h: Handle) => Promise<void>): Promise<void> {
  const { client, close } = await connect(target);
  try {
    const handle = client.workflow.getHandle(handoffWorkflowId(vm));
    const running = await handle.describe().then((d) => d.status.name === 'RUNNING', (err: unknown) => {
      if (err instanceof WorkflowNotFoundError) return false;
      throw err;
    });
    if (!running) throw new CliError(`no handoff of VM '${vm}' is in flight (workflow ${handoffWorkflowId(vm)})`, EXIT.REJECTED);
    await act(handle);
  } finally {
    await close();
  }
}

async function printControl(handle: Handle, json: boolean | undefined): Promise<void> {
  const state = await handle.query(streamControlQuery);
  if (json) console.log(JSON.stringify(state));
  else console.log(`mode ${state.mode} (${state.pinnedMode ? 'pinned' : 'chosen by the adaptation'}), cap ${state.bandwidthCapMbps === null ? 'none' : `${state.bandwidthCapMbps} Mbit/s`}`);
}
