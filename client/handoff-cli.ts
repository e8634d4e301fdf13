import { parseArgs } from 'node:util';
import { Client, Connection } from '@temporalio/client';
import { HandoffFailedError, InvalidRequestError, runHandoff } from './start-handoff.js';
import { progressPrinter, summarize } from './progress-printer.js';

/**
 * Triggers a handoff on a running deployment:
 *   npm run handoff -- --vm <id> --from <cloudlet> --to <cloudlet> [--pin <mode>] [--cap <Mbit/s>] [--json]
 * Exit status: 0 moved, 1 failed (the VM runs on at the source), 2 rejected before starting.
 */
async function main(): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        vm: { type: 'string' },
        from: { type: 'string' },
        to: { type: 'string' },
        json: { type: 'boolean', default: false },
        pin: { type: 'string' },
        cap: { type: 'string' },
        address: { type: 'string', default: process.env.TEMPORAL_ADDRESS ?? '127.0.0.1:7233' },
        namespace: { type: 'string', default: process.env.TEMPORAL_NAMESPACE ?? 'default' },
      },
    }));
  } catch (err) {
    console.error(`handoff: ${(err as Error).message}\nusage: npm run handoff -- --vm <id> --from <cloudlet> --to <cloudlet> [--pin <mode>] [--cap <Mbit/s>] [--json]`);
    return 2;
  }
  const connection = await Connection.connect({ address: values.address });
  const client = new Client({ connection, namespace: values.namespace });
  try {
    console.log(`handoff of ${values.vm} from ${values.from} to ${values.to}`);
    const request = {
      vmId: values.vm,
      source: values.from,
      target: values.to,
      ...(values.pin !== undefined ? { pinnedMode: values.pin } : {}),
      ...(values.cap !== undefined ? { bandwidthCapMbps: Number(values.cap) } : {}),
    };
    const result = await runHandoff(client, request, progressPrinter(console.log));
    for (const line of summarize(result)) console.log(line);
    if (values.json) console.log(JSON.stringify(result));
    return 0;
  } catch (err) {
    if (err instanceof InvalidRequestError) {
      console.error(`handoff rejected: ${err.message}`);
      return 2;
    }
    if (err instanceof HandoffFailedError) {
      console.error(`handoff failed (${err.workflowId}): ${err.message}`);
      return 1;
    }
    throw err;
  } finally {
    await connection.close();
  }
}

main().then((code) => process.exit(code), (err) => {
  console.error(`handoff: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
