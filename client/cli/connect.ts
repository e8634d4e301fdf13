import { Client, type Connection } from '@temporalio/client';
import { connectTo, temporalTarget } from '../../infra/temporal-connection.js';
import { CliError, EXIT } from './exit-codes.js';

/**
 * What the global flags say of where Temporal is. Unset ones come from the temporal.toml profile
 * and TEMPORAL_* variables, then the embedded default (see infra/temporal-connection.ts).
 */
export interface TemporalTarget {
  address?: string;
  namespace?: string;
  profile?: string;
}

/** Connects, or says where it looked and how to get a server there. */
export async function connect(flags: TemporalTarget): Promise<{ client: Client; close(): Promise<void> }> {
  let target;
  try {
    target = temporalTarget(flags);
  } catch (err) {
    throw new CliError((err as Error).message, EXIT.REJECTED);
  }
  let connection: Connection;
  try {
    connection = await connectTo(target, { connectTimeout: '3 seconds' });
  } catch (err) {
    throw new CliError(
      `no Temporal server at ${target.address} (${(err as Error).message.split('\n')[0]}) — start one with \`npm run serve\`, or give --address / TEMPORAL_ADDRESS (or a temporal.toml profile)`,
      EXIT.UNREACHABLE,
    );
  }
  return { client: new Client({ connection, namespace: target.namespace }), close: () => connection.close() };
}
