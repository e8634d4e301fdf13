import { z } from 'zod';

/** Identifiers that cross process boundaries. Pure (no Node imports): workflows use it too. */
export const vmIdSchema = z.string().regex(/^[a-z0-9][a-z0-9-]{0,31}$/, 'a VM id is 1-32 lowercase letters, digits or dashes');
export const cloudletNameSchema = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9-]{0,31}$/, 'a cloudlet name is 1-32 letters, digits or dashes');
export const baseImageIdSchema = z.string().regex(/^base-[0-9a-f]{16}$/, 'a base image id looks like base-<16 hex digits>');
export const workloadSchema = z.object({
  name: z.string().regex(/^[a-z][a-z0-9-]*$/, 'a workload name is lowercase letters, digits or dashes'),
  args: z.array(z.string().regex(/^[\w.=-]+$/, 'workload arguments are words, numbers, dots, dashes or =')),
});
export type Workload = z.infer<typeof workloadSchema>;
/** A handoff's id (its workflow id and run id): printable, bounded, as it travels in frames and logs. */
export const handoffIdSchema = z.string().regex(/^[\x21-\x7e]{1,300}$/, 'a handoff id is 1-300 printable ASCII characters');
