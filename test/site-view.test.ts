import { test } from 'node:test';
import assert from 'node:assert/strict';
import { candidatesFor, whereRuns, type SiteView } from '../engine/placement/site-view.js';
import type { CloudletState } from '../engine/cloudlet/cloudlet.js';

const site = {
  cloudlets: [
    { name: 'A', location: { lat: 52.52, lon: 13.405 }, capacityVms: 8, cpuCores: 1 },
    { name: 'B', location: { lat: 52.39, lon: 13.065 }, capacityVms: 2, cpuCores: 1 },
    { name: 'C', location: { lat: 51.34, lon: 12.375 }, capacityVms: 8, cpuCores: 1 },
  ],
};
const state = (cloudlet: string, vms: Array<[string, string]>, over: Partial<CloudletState> = {}): CloudletState => ({
  cloudlet,
  draining: false,
  vms: vms.map(([vmId, runState]) => ({ vmId, runState, baseImageId: 'base-0000000000000001', cpuCores: 0.1 })),
  lostVms: [],
  baseImages: ['base-0000000000000001'],
  ...over,
});

test('a VM is where it runs; a paused copy (a handoff stopped at its source) counts only when no copy runs', () => {
  const view: SiteView = { site, states: { A: state('A', [['vm1', 'paused']]), B: state('B', [['vm1', 'running']]), C: null } };
  assert.equal(whereRuns(view.states, 'vm1')?.cloudlet, 'B');
  assert.equal(whereRuns({ A: state('A', [['vm1', 'paused']]), B: null, C: null }, 'vm1')?.cloudlet, 'A');
  assert.equal(whereRuns(view.states, 'vm2'), undefined);
});

test("each declared cloudlet becomes a candidate: a silent one offline, its VMs counted, its drain mark and base kept", () => {
  const view: SiteView = {
    site,
    states: { A: state('A', [['vm1', 'running']]), B: state('B', [['vm2', 'running'], ['vm3', 'running']], { draining: true }), C: state('C', [], { baseImages: [] }) },
  };
  assert.deepEqual(
    candidatesFor(view, 'base-0000000000000001').map((c) => [c.cloudlet, c.online, c.runningVms, c.capacityVms, c.draining, c.holdsBase]),
    [['A', true, 1, 8, false, true], ['B', true, 2, 2, true, true], ['C', true, 0, 8, false, false]],
  );
  const offline = candidatesFor({ site, states: { ...view.states, C: null } }, 'base-0000000000000001').find((c) => c.cloudlet === 'C')!;
  assert.equal(offline.online, false);
});
