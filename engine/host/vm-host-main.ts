import { readFile } from 'node:fs/promises';
import { hostRecordSchema } from './host-protocol.js';
import { VmHostServer } from './vm-host-server.js';

/**
 * The VM host process: `node --import tsx engine/host/vm-host-main.ts <vm folder>/host.json`.
 * Started detached by a cloudlet worker (see spawnVmHost), in its own session, so that neither
 * the worker's exit nor a signal to the worker's process group reaches it. SIGTERM is the one
 * signal that ends it, and it ends the VM with it (the sweep's way of removing a host).
 */
async function main(): Promise<void> {
  const recordPath = process.argv[2];
  if (!recordPath) throw new Error('usage: vm-host-main <host record file>');
  const parsed = hostRecordSchema.safeParse(JSON.parse(await readFile(recordPath, 'utf8')));
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new Error(`host record ${recordPath}: field ${issue?.path.join('.') || '(root)'}: ${issue?.message}`);
  }
  const host = await VmHostServer.start(parsed.data);
  await host.listen();
  console.log(`vm host ${parsed.data.vmId}: pid ${process.pid}, QEMU pid ${host.status().qemuPid}, serving ${parsed.data.files.hostSocket}`);
  process.on('SIGHUP', () => undefined);
  process.on('SIGINT', () => undefined);
  process.once('SIGTERM', () => {
    console.log(`vm host ${parsed.data.vmId}: SIGTERM, destroying the VM`);
    void host.destroy().finally(() => process.exit(0));
  });
}

main().catch((err) => {
  console.error(`vm host failed: ${err instanceof Error ? err.stack : String(err)}`);
  process.exit(1);
});
