import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { EXIT } from '../client/cli/exit-codes.js';
import { ehoff } from './support/run-cli.js';

// The operator's CLI where no server is needed: help, requests refused before connecting, and a
// server that is not there named with how to get one. (Against a real deployment: e2e-handoff.)

/** A port nothing listens on: taken from the kernel, then let go. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const { port } = server.address() as { port: number };
  await new Promise((r) => server.close(r));
  return port;
}

test('--help lists every command, and each command has its own', async () => {
  const top = await ehoff(['--help']);
  assert.equal(top.code, EXIT.OK);
  for (const c of ['launch', 'status', 'trigger', 'cancel', 'pin-mode', 'cap', 'list', 'watch']) assert.match(top.stdout, new RegExp(`^  ${c} `, 'm'), `${c} is listed`);
  const trigger = await ehoff(['trigger', '--help']);
  assert.equal(trigger.code, EXIT.OK);
  assert.match(trigger.stdout, /--vm <id>[\s\S]*--from <cloudlet>[\s\S]*--to <cloudlet>[\s\S]*--json/);
});

test('a request that cannot be right is refused before connecting, naming what is wrong', async () => {
  // The address is one nothing answers on: had the CLI tried it, it would have said so (exit 4).
  const address = `127.0.0.1:${await closedPort()}`;
  const same = await ehoff(['--address', address, 'trigger', '--vm', 'v1', '--from', 'A', '--to', 'A']);
  assert.equal(same.code, EXIT.REJECTED);
  assert.match(same.stderr, /'target': source and target must be different cloudlets/);
  const missing = await ehoff(['--address', address, 'trigger', '--vm', 'v1', '--from', 'A']);
  assert.equal(missing.code, EXIT.REJECTED);
  assert.match(missing.stderr, /required option '--to <cloudlet>' not specified/);
  const badCap = await ehoff(['--address', address, 'cap', '--vm', 'v1', '--mbps', '0']);
  assert.equal(badCap.code, EXIT.REJECTED);
  assert.match(badCap.stderr, /--mbps must be a number of Mbit\/s above 0/);
  const badMode = await ehoff(['--address', address, 'pin-mode', '--vm', 'v1', '--mode', 'xor/zstd-4']);
  assert.equal(badMode.code, EXIT.REJECTED);
  assert.match(badMode.stderr, /--mode 'xor\/zstd-4': a mode is/);
});

test('no server at the address: the CLI says where it looked and how to start one', async () => {
  const address = `127.0.0.1:${await closedPort()}`;
  const r = await ehoff(['status', '--vm', 'v1', '--cloudlets', 'A'], { TEMPORAL_ADDRESS: address });
  assert.equal(r.code, EXIT.UNREACHABLE);
  assert.match(r.stderr, new RegExp(`no Temporal server at ${address.replace('.', '\\.')} .*npm run serve`));
});

test('npm run handoff keeps its exit statuses 0/1/2: what ehoff tells apart as 3 or 4 is 1 there', async () => {
  const address = `127.0.0.1:${await closedPort()}`;
  const help = await ehoff(['--help'], {}, 'handoff.ts');
  assert.equal(help.code, EXIT.OK);
  assert.match(help.stdout, /Usage: ehoff trigger/);
  assert.equal((await ehoff(['--vm', 'v1', '--from', 'A', '--to', 'A'], {}, 'handoff.ts')).code, EXIT.REJECTED);
  const unreachable = await ehoff(['--vm', 'v1', '--from', 'A', '--to', 'B'], { TEMPORAL_ADDRESS: address }, 'handoff.ts');
  assert.equal(unreachable.code, 1);
  assert.match(unreachable.stderr, /no Temporal server at/);
});
