import type { CloudletState } from '../cloudlet/cloudlet.js';
import type { PlacementCandidate } from './choose-target.js';
import type { SiteTopology } from './site-topology.js';

/**
 * The site as placement sees it at one moment: the declared topology joined with what each
 * cloudlet's worker reported (none: its worker did not answer, so it counts as offline).
 */
export interface SiteView {
  site: SiteTopology;
  states: Record<string, CloudletState | null>;
}

/** Where a VM runs, by the workers' reports: a running copy before a paused one (a handoff's stopped source). */
export function whereRuns(states: SiteView['states'], vmId: string): { cloudlet: string; baseImageId: string; runState: string } | undefined {
  const copies = Object.values(states).flatMap((s) => (s ? s.vms.filter((v) => v.vmId === vmId).map((v) => ({ cloudlet: s.cloudlet, ...v })) : []));
  const rank = (runState: string) => (runState === 'running' ? 0 : 1);
  return copies.sort((a, b) => rank(a.runState) - rank(b.runState))[0];
}

/** Every declared cloudlet as a placement candidate for a VM of base `baseImageId`. */
export function candidatesFor(view: SiteView, baseImageId: string): PlacementCandidate[] {
  return view.site.cloudlets.map((c) => {
    const state = view.states[c.name] ?? null;
    return {
      cloudlet: c.name,
      location: c.location,
      capacityVms: c.capacityVms,
      runningVms: state?.vms.length ?? 0,
      online: state !== null,
      draining: state?.draining ?? false,
      holdsBase: state?.baseImages.includes(baseImageId) ?? false,
    };
  });
}
