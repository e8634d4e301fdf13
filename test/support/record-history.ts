import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Client } from '@temporalio/client';
import { historyToJSON } from '@temporalio/common/lib/proto-utils.js';

/**
 * With EHOFF_RECORD_HISTORIES=<dir> (e.g. test/histories), saves a workflow's history as the JSON
 * `temporal workflow show --output json` writes, under a name that says which path it took. The
 * replay test runs the workflow code over every recorded history: a change that would break a
 * run in flight fails it. Without the variable, nothing is written.
 */
export async function recordHistory(client: Client, workflowId: string, name: string, runId?: string): Promise<void> {
  const dir = process.env.EHOFF_RECORD_HISTORIES;
  if (!dir) return;
  const history = await client.workflow.getHandle(workflowId, runId).fetchHistory();
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, `${name.replace(/[^a-z0-9.-]+/gi, '-').toLowerCase()}.json`), historyToJSON(history) + '\n');
}
