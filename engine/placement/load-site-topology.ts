import { readFile } from 'node:fs/promises';
import { siteTopologySchema, type SiteTopology } from './site-topology.js';

/** Reads and checks a site topology file, naming the first bad field. */
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
