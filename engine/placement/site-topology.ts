import { z } from 'zod';
import { cloudletNameSchema } from '../names.js';

/**
 * A site's declared shape: its cloudlets, where each stands and how many VMs it takes. Placement
 * reads it with each cloudlet's live load; an operator edits it (infra/site-topology.json is the
 * embedded default's), so it is checked field by field on load.
 */
export const locationSchema = z.object({
  lat: z.number().min(-90).max(90),
  lon: z.number().min(-180).max(180),
});
export type Location = z.infer<typeof locationSchema>;

export const siteTopologySchema = z.object({
  cloudlets: z
    .array(
      z.object({
        name: cloudletNameSchema,
        location: locationSchema,
        /** VMs it runs at most: a move that would exceed it goes elsewhere. */
        capacityVms: z.number().int().positive(),
        /**
         * Cores its VMs may keep busy: the load monitor's 100%. The testbed's cloudlets share one
         * 2-core host with their workers and Temporal, so each is given 1.
         */
        cpuCores: z.number().positive().max(4096).default(1),
      }).strict(),
    )
    .min(1)
    .refine((cs) => new Set(cs.map((c) => c.name)).size === cs.length, { message: 'names a cloudlet twice' }),
}).strict();
export type SiteTopology = z.infer<typeof siteTopologySchema>;
