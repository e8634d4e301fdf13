import type { Location } from './site-topology.js';

/** One cloudlet as placement sees it: its declared place and capacity, its live state. */
export interface PlacementCandidate {
  cloudlet: string;
  location: Location;
  capacityVms: number;
  /** VMs it runs now (its worker's report). */
  runningVms: number;
  /** Whether its worker is polling: an offline cloudlet takes nothing. */
  online: boolean;
  /** Being drained: it takes no new VMs. */
  draining: boolean;
  /** Whether its image cache holds the VM's base image (else the base must travel first). */
  holdsBase: boolean;
}

export interface PlacementRequest {
  vmId: string;
  /** Where the VM runs now: never its own target (none for a launch). */
  source?: string;
  /** Only cloudlets that hold the base image (a launch starts from it; a handoff can fetch it). */
  requireBase?: boolean;
  /** The event named a target: it is taken if it can take the VM, else the move is refused. */
  toCloudlet?: string;
  /** Where the VM's user is now: the nearest eligible cloudlet wins. */
  near?: Location;
}

export interface CandidateVerdict {
  cloudlet: string;
  verdict: 'chosen' | 'lost' | 'excluded';
  /** Why, in words an operator reads in the history. */
  why: string;
  /** Distance to the user, when the request says where the user is. */
  distanceKm?: number;
}

export interface PlacementDecision {
  /** Null: no cloudlet can take the VM (the reason says why). */
  target: string | null;
  reason: string;
  candidates: CandidateVerdict[];
}

/**
 * Cloudlets within this many km of the nearest count as equally near. Light in fibre takes
 * ~5 µs a km, so 25 km more is ~0.25 ms more round trip — under a tenth of the 3–5 ms a metro
 * access network already adds — and then the cheaper move (a base already there, less load)
 * decides.
 */
export const NEAR_ENOUGH_KM = 25;

/**
 * Picks the cloudlet a VM moves to: of those online, not draining, not the source and with room,
 * the nearest to the user (within NEAR_ENOUGH_KM of the nearest), then one that already holds the
 * VM's base image, then the least loaded (running / capacity), then by name so the choice is
 * deterministic. Every candidate gets its verdict and why. Pure, so a workflow can run it.
 */
/** An eligible candidate with what it is ranked on. */
type Ranked = PlacementCandidate & { load: number; distanceKm?: number };

export function chooseTarget(req: PlacementRequest, candidates: PlacementCandidate[]): PlacementDecision {
  const verdicts = new Map<string, CandidateVerdict>();
  const exclude = (c: PlacementCandidate, why: string) => verdicts.set(c.cloudlet, { cloudlet: c.cloudlet, verdict: 'excluded', why });
  const eligible: Ranked[] = [];
  for (const c of candidates) {
    if (c.cloudlet === req.source) exclude(c, 'the VM runs there now');
    else if (!c.online) exclude(c, 'its worker is offline');
    else if (c.draining) exclude(c, 'it is being drained');
    else if (c.runningVms >= c.capacityVms) exclude(c, `full: ${c.runningVms} of ${c.capacityVms} VMs`);
    else if (req.requireBase && !c.holdsBase) exclude(c, 'it lacks the base image');
    else eligible.push({ ...c, load: c.runningVms / c.capacityVms, ...(req.near ? { distanceKm: distanceKm(req.near, c.location) } : {}) });
  }
  const ordered = () => candidates.map((c) => verdicts.get(c.cloudlet)!);

  if (req.toCloudlet !== undefined) {
    const taken = eligible.find((e) => e.cloudlet === req.toCloudlet);
    for (const e of eligible) if (e !== taken) verdicts.set(e.cloudlet, { cloudlet: e.cloudlet, verdict: 'lost', why: `the event named ${req.toCloudlet}` });
    if (!candidates.some((c) => c.cloudlet === req.toCloudlet)) return { target: null, reason: `the event names cloudlet ${req.toCloudlet}, which the site does not have`, candidates: ordered() };
    if (!taken) return { target: null, reason: `the event names ${req.toCloudlet}, which cannot take it: ${verdicts.get(req.toCloudlet)!.why}`, candidates: ordered() };
    verdicts.set(taken.cloudlet, { cloudlet: taken.cloudlet, verdict: 'chosen', why: 'named by the event', ...(taken.distanceKm !== undefined ? { distanceKm: taken.distanceKm } : {}) });
    return { target: taken.cloudlet, reason: `named by the event (${describe(taken)})`, candidates: ordered() };
  }

  if (eligible.length === 0) return { target: null, reason: 'no cloudlet can take it: every one is the source, offline, draining or full', candidates: ordered() };
  const nearest = Math.min(...eligible.map((e) => e.distanceKm ?? 0));
  const ranked = [...eligible].sort(
    (x, y) =>
      Number((x.distanceKm ?? 0) > nearest + NEAR_ENOUGH_KM) - Number((y.distanceKm ?? 0) > nearest + NEAR_ENOUGH_KM) ||
      Number(y.holdsBase) - Number(x.holdsBase) ||
      x.load - y.load ||
      (x.distanceKm ?? 0) - (y.distanceKm ?? 0) ||
      x.cloudlet.localeCompare(y.cloudlet),
  );
  const best = ranked[0]!;
  for (const e of ranked) {
    const km = e.distanceKm !== undefined ? { distanceKm: e.distanceKm } : {};
    if (e === best) verdicts.set(e.cloudlet, { cloudlet: e.cloudlet, verdict: 'chosen', why: describe(e), ...km });
    else verdicts.set(e.cloudlet, { cloudlet: e.cloudlet, verdict: 'lost', why: whyLost(e, best, nearest), ...km });
  }
  const basis = req.near ? 'nearest to the user with room' : 'no user location: least loaded with room';
  return { target: best.cloudlet, reason: `${basis}: ${best.cloudlet} (${describe(best)})`, candidates: ordered() };
}

function describe(c: Ranked): string {
  const parts = [`${c.runningVms} of ${c.capacityVms} VMs`, c.holdsBase ? 'holds the base' : 'lacks the base'];
  if (c.distanceKm !== undefined) parts.unshift(`${c.distanceKm.toFixed(0)} km from the user`);
  return parts.join(', ');
}

/** The first criterion on which `c` came after `best`. */
function whyLost(c: Ranked, best: Ranked, nearest: number): string {
  if (c.distanceKm !== undefined && c.distanceKm > nearest + NEAR_ENOUGH_KM) return `farther: ${c.distanceKm.toFixed(0)} km from the user, ${best.cloudlet} ${best.distanceKm!.toFixed(0)} km`;
  if (best.holdsBase && !c.holdsBase) return `lacks the base image, which ${best.cloudlet} holds`;
  if (c.load > best.load) return `more loaded: ${c.runningVms} of ${c.capacityVms} VMs against ${best.runningVms} of ${best.capacityVms}`;
  if (c.distanceKm !== undefined && c.distanceKm > best.distanceKm!) return `a little farther (${c.distanceKm.toFixed(0)} km against ${best.distanceKm!.toFixed(0)} km) with nothing else between them`;
  return `tied with ${best.cloudlet}, which comes first by name`;
}

/** Great-circle distance (haversine, mean Earth radius). */
export function distanceKm(a: Location, b: Location): number {
  const rad = (d: number) => (d * Math.PI) / 180;
  const dLat = rad(b.lat - a.lat);
  const dLon = rad(b.lon - a.lon);
  const h = Math.sin(dLat / 2) ** 2 + Math.cos(rad(a.lat)) * Math.cos(rad(b.lat)) * Math.sin(dLon / 2) ** 2;
  return 2 * 6371 * Math.asin(Math.min(1, Math.sqrt(h)));
}
