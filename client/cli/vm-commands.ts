import type { Command } from 'commander';
import { WorkflowFailedError, WorkflowNotFoundError, type Client } from '@temporalio/client';
import { loadSiteTopology } from '../../engine/placement/load-site-topology.js';
import { SITE_TOPOLOGY_FILE } from '../../infra/paths.js';
import type { CloudletState, VmDescription } from '../../activities/cloudlet-activities.js';
import { describeCloudlets, launchVm } from '../../workflows/vm-lifecycle.js';
import { describeInvalid, launchVmInputSchema, progressQuery } from '../../workflows/definitions.js';
import { executeWorkflow } from '../execute-workflow.js';
import { handoffWorkflowId } from '../start-handoff.js';
import { UnknownCloudletError, assertCloudletOnline } from '../cloudlet-check.js';
import { connect, type TemporalTarget } from './connect.js';
import { CliError, EXIT } from './exit-codes.js';

type Globals = () => TemporalTarget;


/** The `status --json` line (the issue's contract; `copies` and the handoff's fields beyond it are extensions). */
export interface VmStatus {
  vmId: string;
  /** Where the VM runs now; null if nowhere. */
  cloudlet: string | null;
  runState: string | null;
  handoff?: { workflowId: string; status: string; step?: string };
  /** Every cloudlet that holds a copy, running or not (a stopped source copy during a handoff, say). */
  copies: Array<{ cloudlet: string; runState: string }>;
}

/** The message of an activity's failure inside a workflow's, as the worker wrote it. */
function innermost(err: unknown): string {
  let e: unknown = err;
  while (e instanceof Error && e.cause instanceof Error) e = e.cause;
  return e instanceof Error ? e.message : String(e);
}

/** `launch`, `status`: a VM's start and where it runs. */
export function vmCommands(program: Command, globals: Globals): void {
  program
    .command('launch')
    .description('start a VM on a cloudlet from a base image, running one of its guest workloads')
    .requiredOption('--vm <id>', 'the new VM')
    .requiredOption('--on <cloudlet>', 'the cloudlet to run it')
    .requiredOption('--base <id>', 'the base image it boots from (base-…)')
    .option('--workload <name>', 'a workload of the base image: heartbeat, kvstore, imageproc, fluid, logger, idle, marker')
    .option('--args <args...>', "the workload's arguments")
    .option('--json', 'print the VM as one JSON line')
    .action(async (o: { vm: string; on: string; base: string; workload?: string; args?: string[]; json?: boolean }) => {
      const input = launchVmInputSchema.safeParse({
        vmId: o.vm, cloudlet: o.on, baseImageId: o.base,
        ...(o.workload !== undefined ? { workload: { name: o.workload, args: o.args ?? [] } } : {}),
      });
      if (!input.success) throw new CliError(describeInvalid('launch request', input.error), EXIT.REJECTED);
      const { client, close } = await connect(globals());
      try {
        await online(client, o.on);
        const vm = await executeWorkflow(client, launchVm, input.data).catch((err: unknown) => {
          throw new CliError(`launch of ${o.vm} on ${o.on} failed: ${innermost(err)}`, err instanceof WorkflowFailedError ? EXIT.REJECTED : EXIT.FAILED_AT_SOURCE);
        });
        console.log(o.json ? JSON.stringify(vm) : `VM ${vm.vmId} ${vm.runState} on ${vm.cloudlet} (base ${vm.baseImageId})`);
      } finally {
        await close();
      }
    });

  program
    .command('status')
    .description('where a VM runs now (asking every cloudlet of the site), and its handoff if it has one')
    .requiredOption('--vm <id>', 'the VM')
    .option('--cloudlets <names>', 'the cloudlets to ask, comma-separated (default: those of infra/site-topology.json)')
    .option('--json', 'print {"vmId", "cloudlet", "runState", "handoff"?} as one JSON line')
    .action(async (o: { vm: string; cloudlets?: string; json?: boolean }) => {
      const names = o.cloudlets?.split(',').map((c) => c.trim()).filter(Boolean) ?? (await loadSiteTopology(SITE_TOPOLOGY_FILE)).cloudlets.map((c) => c.name);
      const { client, close } = await connect(globals());
      try {
        const status = await vmStatus(client, o.vm, names);
        if (o.json) console.log(JSON.stringify(status));
        else {
          console.log(status.cloudlet ? `VM ${o.vm} runs on ${status.cloudlet}` : `VM ${o.vm} runs nowhere${status.copies.length ? '' : ' (no cloudlet holds it)'}`);
          for (const c of status.copies.filter((c) => c.cloudlet !== status.cloudlet)) console.log(`  a copy on ${c.cloudlet}: ${c.runState}`);
          if (status.handoff) console.log(`  handoff ${status.handoff.workflowId}: ${status.handoff.status}${status.handoff.step ? ` at ${status.handoff.step}` : ''}`);
        }
      } finally {
        await close();
      }
    });
}

async function online(client: Client, cloudlet: string): Promise<void> {
  try {
    await assertCloudletOnline(client, cloudlet);
  } catch (err) {
    if (err instanceof UnknownCloudletError) throw new CliError(err.message, EXIT.REJECTED);
    throw err;
  }
}

/** Asks every named cloudlet (one describeCloudlets workflow); the one where it runs is where it is. */
export async function vmStatus(client: Client, vmId: string, cloudlets: string[]): Promise<VmStatus> {
  const states = await executeWorkflow(client, describeCloudlets, { cloudlets });
  const copies: VmStatus['copies'] = [];
  for (const cloudlet of cloudlets) {
    const state = states[cloudlet];
    const vm = state?.vms.find((v) => v.vmId === vmId);
    if (vm) copies.push({ cloudlet, runState: vm.runState });
    else if (state?.lostVms.includes(vmId)) copies.push({ cloudlet, runState: 'lost' });
  }
  const running = copies.find((c) => c.runState === 'running');
  const handle = client.workflow.getHandle(handoffWorkflowId(vmId));
  const handoff = await handle.describe().then(
    async (d) => ({
      workflowId: d.workflowId,
      status: d.status.name,
      ...(d.status.name === 'RUNNING' ? { step: await handle.query(progressQuery).then((p) => p.step, () => undefined) } : {}),
    }),
    (err: unknown) => {
      if (err instanceof WorkflowNotFoundError) return undefined;
      throw err;
    },
  );
  return { vmId, cloudlet: running?.cloudlet ?? null, runState: running?.runState ?? null, ...(handoff ? { handoff: stripUndefined(handoff) } : {}), copies };
}

const stripUndefined = <T extends object>(o: T): T => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
