import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { NEAR_ENOUGH_KM, chooseTarget, distanceKm, type PlacementCandidate } from '../engine/placement/choose-target.js';
import { loadSiteTopology } from '../engine/placement/load-site-topology.js';
import { REPO_ROOT } from '../infra/paths.js';

// Berlin, Potsdam (27 km away) and Leipzig (150 km away), as in infra/site-topology.json.
const BERLIN = { lat: 52.52, lon: 13.405 };
const POTSDAM = { lat: 52.39, lon: 13.065 };
const LEIPZIG = { lat: 51.34, lon: 12.375 };

const cloudlet = (name: string, location: typeof BERLIN, more: Partial<PlacementCandidate> = {}): PlacementCandidate => ({
  cloudlet: name, location, capacityVms: 8, runningVms: 2, online: true, draining: false, holdsBase: true, ...more,
});
const site = (more: Record<string, Partial<PlacementCandidate>> = {}) => [
  cloudlet('A', BERLIN, more.A), cloudlet('B', POTSDAM, more.B), cloudlet('C', LEIPZIG, more.C),
];
const verdictOf = (d: ReturnType<typeof chooseTarget>, name: string) => d.candidates.find((c) => c.cloudlet === name)!;

test('distances are great-circle: Berlin to Leipzig about 150 km, Potsdam 27 km', () => {
  assert.ok(Math.abs(distanceKm(BERLIN, LEIPZIG) - 150) < 5, `${distanceKm(BERLIN, LEIPZIG)}`);
  assert.ok(Math.abs(distanceKm(BERLIN, POTSDAM) - 27) < 3, `${distanceKm(BERLIN, POTSDAM)}`);
  assert.equal(distanceKm(BERLIN, BERLIN), 0);
});

test('a user who moved goes to the cloudlet nearest to them; the source and the farther ones lose, each with its reason', () => {
  const d = chooseTarget({ vmId: 'v', source: 'A', near: { lat: 51.4, lon: 12.4 } }, site());
  assert.equal(d.target, 'C');
  assert.match(d.reason, /nearest to the user with room: C \(7 km from the user/);
  assert.deepEqual(verdictOf(d, 'A'), { cloudlet: 'A', verdict: 'excluded', why: 'the VM runs there now' });
  assert.equal(verdictOf(d, 'B').verdict, 'lost');
  assert.match(verdictOf(d, 'B').why, /^farther: 1\d\d km from the user, C 7 km$/);
  assert.deepEqual(d.candidates.map((c) => c.cloudlet), ['A', 'B', 'C'], 'every cloudlet is accounted for, in the site order');
});

test('among cloudlets about as near, one that holds the base wins, then the less loaded', () => {
  // The user between Berlin and Potsdam: both within NEAR_ENOUGH_KM of the nearest.
  const between = { lat: 52.45, lon: 13.23 };
  assert.ok(Math.abs(distanceKm(between, BERLIN) - distanceKm(between, POTSDAM)) < NEAR_ENOUGH_KM);
  const base = chooseTarget({ vmId: 'v', source: 'C', near: between }, site({ A: { holdsBase: false } }));
  assert.equal(base.target, 'B');
  assert.equal(verdictOf(base, 'A').why, 'lacks the base image, which B holds');
  const load = chooseTarget({ vmId: 'v', source: 'C', near: between }, site({ A: { runningVms: 1 }, B: { runningVms: 6 } }));
  assert.equal(load.target, 'A');
  assert.equal(verdictOf(load, 'B').why, 'more loaded: 6 of 8 VMs against 1 of 8');
  assert.equal(verdictOf(load, 'C').verdict, 'excluded', 'the source');
});

test('nearness comes first: a far cloudlet with the base and no load loses to a near one without it', () => {
  const d = chooseTarget({ vmId: 'v', source: 'A', near: LEIPZIG }, site({ C: { holdsBase: false, runningVms: 7 }, B: { runningVms: 0 } }));
  assert.equal(d.target, 'C');
  assert.match(verdictOf(d, 'B').why, /^farther/);
});

test('offline, draining and full cloudlets are excluded, saying which', () => {
  const d = chooseTarget({ vmId: 'v', source: 'A', near: LEIPZIG }, site({ C: { runningVms: 8 }, B: { draining: true } }));
  assert.equal(d.target, null);
  assert.match(d.reason, /no cloudlet can take it/);
  assert.equal(verdictOf(d, 'C').why, 'full: 8 of 8 VMs');
  assert.equal(verdictOf(d, 'B').why, 'it is being drained');
  const offline = chooseTarget({ vmId: 'v', source: 'A' }, site({ B: { online: false } }));
  assert.equal(offline.target, 'C');
  assert.equal(verdictOf(offline, 'B').why, 'its worker is offline');
  assert.match(offline.reason, /^no user location: least loaded with room: C/);
});

test('a target the event names is taken if it can take the VM, and refused with the reason if not', () => {
  const named = chooseTarget({ vmId: 'v', source: 'A', toCloudlet: 'C', near: POTSDAM }, site());
  assert.equal(named.target, 'C', 'the event overrides nearness');
  assert.equal(verdictOf(named, 'B').why, 'the event named C');
  const full = chooseTarget({ vmId: 'v', source: 'A', toCloudlet: 'C' }, site({ C: { runningVms: 8 } }));
  assert.equal(full.target, null);
  assert.equal(full.reason, 'the event names C, which cannot take it: full: 8 of 8 VMs');
  assert.equal(chooseTarget({ vmId: 'v', source: 'A', toCloudlet: 'A' }, site()).reason, 'the event names A, which cannot take it: the VM runs there now');
  assert.match(chooseTarget({ vmId: 'v', source: 'A', toCloudlet: 'Z' }, site()).reason, /names cloudlet Z, which the site does not have/);
});

test('ties go by name, so the same inputs always choose the same cloudlet', () => {
  const d = chooseTarget({ vmId: 'v', source: 'C' }, site());
  assert.equal(d.target, 'A');
  assert.equal(verdictOf(d, 'B').why, 'tied with A, which comes first by name');
  assert.deepEqual(chooseTarget({ vmId: 'v', source: 'C' }, site().reverse()).target, 'A');
});

test('the site topology file is checked field by field', async () => {
  const topology = await loadSiteTopology(join(REPO_ROOT, 'infra', 'site-topology.json'));
  assert.deepEqual(topology.cloudlets.map((c) => c.name), ['A', 'B', 'C']);
  const dir = await mkdtemp(join(tmpdir(), 'ehoff-topology-'));
  try {
    const bad = join(dir, 'bad.json');
    await writeFile(bad, JSON.stringify({ cloudlets: [{ name: 'A', location: { lat: 95, lon: 0 }, capacityVms: 4 }] }));
    await assert.rejects(loadSiteTopology(bad), /'cloudlets\.0\.location\.lat'/);
    await writeFile(bad, JSON.stringify({ cloudlets: [{ name: 'A', location: BERLIN, capacityVms: 4 }, { name: 'A', location: BERLIN, capacityVms: 4 }] }));
    await assert.rejects(loadSiteTopology(bad), /names a cloudlet twice/);
    await writeFile(bad, '{ not json');
    await assert.rejects(loadSiteTopology(bad), /site topology .*bad\.json/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
