import { Client } from '@temporalio/client';
import { connectTo, temporalTarget } from '../infra/temporal-connection.js';
import { modeIdSchema } from '../engine/adaptation/mode.js';
import { vmIdSchema } from '../engine/names.js';
import { handoffWorkflowId } from './start-handoff.js';
import { capBandwidthSignal, pinModeSignal, streamControlQuery, unpinModeSignal } from '../workflows/definitions.js';

const USAGE = `usage: npm run stream-control -- <vm> pin <mode> | unpin | cap <mbit/s> | uncap | show
  modes look like xor/zstd-3, fossil/xz-9, none/none`;

/** An operator's hand on a running handoff's stream: pin or unpin a mode, cap the bandwidth. */
async function main(args: string[]): Promise<number> {
  const [vm, verb, value] = args;
  const vmOk = vmIdSchema.safeParse(vm);
  if (!vmOk.success || !verb) {
    console.error(`stream-control: ${vmOk.success ? 'no command given' : `'${vm ?? ''}' is not a VM id`}\n${USAGE}`);
    return 2;
  }
  const temporal = temporalTarget();
  const connection = await connectTo(temporal);
  const client = new Client({ connection, namespace: temporal.namespace });
  const handle = client.workflow.getHandle(handoffWorkflowId(vmOk.data));
  try {
    switch (verb) {
      case 'pin': {
        const m = modeIdSchema.safeParse(value);
        if (!m.success) {
          console.error(`stream-control: '${value ?? ''}': ${m.error.issues[0]?.message}`);
          return 2;
        }
        await handle.signal(pinModeSignal, m.data);
        break;
      }
      case 'unpin':
        await handle.signal(unpinModeSignal);
        break;
      case 'cap': {
        const mbps = Number(value);
        if (!(mbps > 0)) {
          console.error(`stream-control: cap needs a positive Mbit/s figure, got '${value ?? ''}'`);
          return 2;
        }
        await handle.signal(capBandwidthSignal, mbps);
        break;
      }
      case 'uncap':
        await handle.signal(capBandwidthSignal, null);
        break;
      case 'show':
        break;
      default:
        console.error(`stream-control: unknown command '${verb}'\n${USAGE}`);
        return 2;
    }
    console.log(JSON.stringify(await handle.query(streamControlQuery)));
    return 0;
  } finally {
    await connection.close();
  }
}

main(process.argv.slice(2)).then((c) => process.exit(c), (err) => {
  console.error(`stream-control: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
