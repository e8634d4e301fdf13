import proto from '@temporalio/proto';

const { temporal } = proto;
import type { Client } from '@temporalio/client';
import { cloudletTaskQueue } from '../workflows/definitions.js';

/**
 * A cloudlet is known when a worker polls its task queue. Asking before starting a workflow turns
 * "activity never scheduled" (a wait until timeout) into an immediate, named error.
 */
export async function assertCloudletOnline(client: Client, cloudlet: string): Promise<void> {
  const reply = await client.workflowService.describeTaskQueue({
    namespace: client.options.namespace,
    taskQueue: { name: cloudletTaskQueue(cloudlet), kind: temporal.api.enums.v1.TaskQueueKind.TASK_QUEUE_KIND_NORMAL },
    taskQueueType: temporal.api.enums.v1.TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
  });
  if (!reply.pollers?.length) {
    throw new UnknownCloudletError(cloudlet);
  }
}

export class UnknownCloudletError extends Error {
  constructor(readonly cloudlet: string) {
    super(`unknown cloudlet '${cloudlet}': no worker polls task queue ${cloudletTaskQueue(cloudlet)}`);
  }
}

/** Whether the server has the custom search attributes the handoff sets (the embedded one does). */
export async function hasSearchAttributes(client: Client, names: string[]): Promise<boolean> {
  try {
    const reply = await client.connection.operatorService.listSearchAttributes({ namespace: client.options.namespace });
    return names.every((n) => n in (reply.customAttributes ?? {}));
  } catch {
    return false;
  }
}
