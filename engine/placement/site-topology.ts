import { readFile } from 'node:fs/promises';
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
      }).strict(),
    )
    .min(1)
    .refine((cs) => new Set(cs.map((c) => c.name)).size === cs.length, { message: 'names a cloudlet twice' }),
}).strict();
export type SiteTopology = z.infer<typeof siteTopologySchema>;

export async function loadSiteTopology(file: string): Promise<SiteTopology> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(file, 'utf8'));
  } catch (err) {
    throw new Error(`site topology ${file}: ${(err as Error).message}`);
  }
  const parsed = siteTopologySchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new Error(`site topology ${file}: '${issue.path.join('.') || '(top)'}' ${issue.message}`);
  }
  return parsed.data;
}
