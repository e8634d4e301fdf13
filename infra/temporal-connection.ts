import { Connection, type ConnectionOptions } from '@temporalio/client';
import { loadClientConnectConfig } from '@temporalio/envconfig';

/**
 * How every process of the project reaches Temporal — workers, the CLI, the event service, the
 * clients — by Temporal's own conventions (@temporalio/envconfig, as the CLI and the other SDKs
 * read them): a profile of a `temporal.toml` (TEMPORAL_CONFIG_FILE, else
 * ~/.config/temporalio/temporal.toml; TEMPORAL_PROFILE picks it), overridden by TEMPORAL_ADDRESS,
 * TEMPORAL_NAMESPACE, TEMPORAL_API_KEY and TEMPORAL_TLS_* (client certificate and key, server CA,
 * server name), overridden in turn by a process's own flags. So the same processes join the
 * embedded dev server, a self-hosted cluster with mTLS or Temporal Cloud with only their
 * environment changed.
 */
export interface TemporalTarget {
  /** host:port of the frontend. */
  address: string;
  namespace: string;
  /** TLS and API key as the profile and environment give them (none for the embedded server). */
  connectionOptions: ConnectionOptions;
}

export const DEFAULT_ADDRESS = '127.0.0.1:7233';

/** The target from the profile and environment, with what flags say over them. */
export function temporalTarget(flags: { address?: string | undefined; namespace?: string | undefined; profile?: string | undefined; plain?: boolean } = {}): TemporalTarget {
  if (flags.plain) {
    // The embedded dev server, reached as it is whatever profile the user keeps for others.
    const address = flags.address ?? DEFAULT_ADDRESS;
    return { address, namespace: flags.namespace ?? 'default', connectionOptions: { address } };
  }
  let loaded;
  try {
    loaded = loadClientConnectConfig(flags.profile ? { profile: flags.profile } : {});
  } catch (err) {
    throw new Error(`Temporal client configuration (temporal.toml profile${flags.profile ? ` '${flags.profile}'` : ''} or TEMPORAL_* variables): ${(err as Error).message}`);
  }
  const { address: fromConfig, ...rest } = loaded.connectionOptions;
  const address = flags.address ?? fromConfig ?? DEFAULT_ADDRESS;
  return {
    address,
    namespace: flags.namespace ?? loaded.namespace ?? 'default',
    // Only what the profile set: no `tls: undefined` to mistake for a choice.
    connectionOptions: { ...(Object.fromEntries(Object.entries(rest).filter(([, v]) => v !== undefined)) as ConnectionOptions), address },
  };
}

/** A client connection to the target. */
export function connectTo(target: TemporalTarget, opts: { connectTimeout?: ConnectionOptions['connectTimeout'] } = {}): Promise<Connection> {
  return Connection.connect({ ...target.connectionOptions, ...opts });
}
