import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { temporalTarget } from '../infra/temporal-connection.js';
import { tempRoot } from './support/fixtures.js';

// Every process reads Temporal's conventions: a temporal.toml profile, TEMPORAL_* over it, flags
// over both. These run in a child-free way by pointing TEMPORAL_CONFIG_FILE at a file of the test's.

const withEnv = async <T>(env: Record<string, string | undefined>, f: () => T | Promise<T>): Promise<T> => {
  const before = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]));
  for (const [k, v] of Object.entries(env)) v === undefined ? delete process.env[k] : (process.env[k] = v);
  try {
    return await f();
  } finally {
    for (const [k, v] of Object.entries(before)) v === undefined ? delete process.env[k] : (process.env[k] = v);
  }
};
const CLEAN = { TEMPORAL_ADDRESS: undefined, TEMPORAL_NAMESPACE: undefined, TEMPORAL_PROFILE: undefined, TEMPORAL_API_KEY: undefined, TEMPORAL_TLS: undefined };

test('a temporal.toml profile gives address, namespace, mTLS files and API key; TEMPORAL_* and flags override it', async () => {
  const root = await tempRoot('envconfig');
  try {
    const toml = join(root.dir, 'temporal.toml');
    const [cert, key, ca] = ['client.crt', 'client.key', 'ca.crt'].map((f) => join(root.dir, f));
    for (const f of [cert!, key!, ca!]) await writeFile(f, `-----BEGIN TEST ${f}-----\n`);
    await writeFile(
      toml,
      [
        '[profile.default]', 'address = "127.0.0.1:7233"', 'namespace = "default"', '',
        '[profile.site]', 'address = "temporal.site.example:7233"', 'namespace = "edge"',
        '[profile.site.tls]', `client_cert_path = "${cert}"`, `client_key_path = "${key}"`, `server_ca_cert_path = "${ca}"`, 'server_name = "temporal.site.example"', '',
        '[profile.cloud]', 'address = "ns.acct.tmprl.cloud:7233"', 'namespace = "ns.acct"', 'api_key = "k-123"',
      ].join('\n'),
    );
    await withEnv({ ...CLEAN, TEMPORAL_CONFIG_FILE: toml }, () => {
      assert.deepEqual(temporalTarget(), { address: '127.0.0.1:7233', namespace: 'default', connectionOptions: { address: '127.0.0.1:7233' } });
      const site = temporalTarget({ profile: 'site' });
      assert.equal(site.address, 'temporal.site.example:7233');
      assert.equal(site.namespace, 'edge');
      const tls = site.connectionOptions.tls as { serverNameOverride?: string; clientCertPair?: { crt: Uint8Array }; serverRootCACertificate?: Uint8Array };
      assert.equal(tls.serverNameOverride, 'temporal.site.example');
      assert.match(Buffer.from(tls.clientCertPair!.crt).toString(), /client\.crt/);
      assert.match(Buffer.from(tls.serverRootCACertificate!).toString(), /ca\.crt/);
      const cloud = temporalTarget({ profile: 'cloud' });
      assert.equal(cloud.connectionOptions.apiKey, 'k-123');
      assert.ok(cloud.connectionOptions.tls, 'an API key turns TLS on');
      // Flags over the profile; the profile's TLS stays.
      const flagged = temporalTarget({ profile: 'site', address: '10.0.0.9:7233', namespace: 'other' });
      assert.deepEqual([flagged.address, flagged.namespace, flagged.connectionOptions.address, Boolean(flagged.connectionOptions.tls)], ['10.0.0.9:7233', 'other', '10.0.0.9:7233', true]);
    });
    await withEnv({ ...CLEAN, TEMPORAL_CONFIG_FILE: toml, TEMPORAL_PROFILE: 'site', TEMPORAL_NAMESPACE: 'from-env' }, () => {
      assert.deepEqual([temporalTarget().address, temporalTarget().namespace], ['temporal.site.example:7233', 'from-env']);
      // The embedded dev server is reached plainly whatever the profile says.
      assert.deepEqual(temporalTarget({ address: '127.0.0.1:7999', plain: true }), { address: '127.0.0.1:7999', namespace: 'default', connectionOptions: { address: '127.0.0.1:7999' } });
    });
    await withEnv({ ...CLEAN, TEMPORAL_CONFIG_FILE: toml, TEMPORAL_PROFILE: 'nosuch' }, () => {
      assert.throws(() => temporalTarget(), /Temporal client configuration .*nosuch|profile/i);
    });
  } finally {
    await root.remove();
  }
});
