import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import type { EmbeddedCluster } from '../infra/embedded-cluster.js';
import { freshScratch, startSecurityCluster } from './security/security-cluster.js';
import { runSecuritySuite } from './security/security-suite.js';
import { testBaseImage } from './support/fixtures.js';

// `npm run test:security`, whole, in `npm test`: the data plane attacked on the real stack while
// real handoffs run (see test/security/security-suite.ts for what each check does).

let cluster: EmbeddedCluster | undefined;
let root: Awaited<ReturnType<typeof freshScratch>>;
let baseImageId: string;

before(async () => {
  const base = await testBaseImage();
  baseImageId = base.id;
  root = await freshScratch();
  cluster = await startSecurityCluster(base.dir, root.dir, (l) => console.error(`# ${l}`));
});

after(async () => {
  await cluster?.stop();
  await root?.remove();
});

test('the data plane under attack: strangers refused, nothing readable on the wire or in history, floods and bombs bounded', async () => {
  const checks = await runSecuritySuite({ cluster: cluster!, baseImageId, workDir: join(root.dir, 'work'), log: (l) => console.error(`# ${l}`) });
  assert.ok(checks.length >= 10, `every check ran (${checks.length})`);
  for (const c of checks) assert.ok(c.passed, `${c.name}: ${c.figure}`);
});
