import { Client, Connection } from '@temporalio/client';
import { CliError, EXIT } from './exit-codes.js';

/** Where the CLI finds Temporal: flags over the environment's conventions over the embedded default. */
export interface TemporalTarget {
  address: string;
  namespace: string;
}

export const DEFAULT_TARGET: TemporalTarget = {
  address: process.env.TEMPORAL_ADDRESS ?? '127.0.0.1:7233',
  namespace: process.env.TEMPORAL_NAMESPACE ?? 'default',
};

/** Connects, or says where it looked and how to get a server there. */
export async function connect(t: TemporalTarget): Promise<{ client: Client; close(): Promise<void> }> {
  let connection: Connection;
  try {
    connection = await Connection.connect({ address: t.address, connectTimeout: '3 seconds' });
  } catch (err) {
    throw new CliError(
      `no Temporal server at ${t.address} (${(err as Error).message.split('\n')[0]}) — start one with \`npm run serve\`, or give --address / TEMPORAL_ADDRESS`,
      EXIT.UNREACHABLE,
    );
  }
  return { client: new Client({ connection, namespace: t.namespace }), close: () => connection.close() };
}
