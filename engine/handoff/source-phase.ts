import { z } from 'zod';

/**
 * The source side of a handoff, as declared and persisted in the VM's folder before each step
 * takes effect (libvirt's migration phases). A restarted worker, and a rollback, decide from it
 * alone (see decideSourceRecovery).
 *
 * - `snapshot`: the handoff holds the VM (no other may start); nothing stopped yet.
 * - `live`: a stream attempt runs pre-copy; the guest runs (or is throttled by stop/cont).
 * - `stopped`: the guest is paused for the final epoch; the end frame has not left.
 * - `commit-sent`: the end frame of attempt `attempt` and the commit frame right behind it may
 *   have left (recorded before they are handed to the link): the target may run the VM, so only
 *   its answer may let this copy run again — an explicit "released", or its taking a newer
 *   attempt, which it does only if it never committed an earlier one.
 * - `released`: the handoff ended without moving the VM; the copy here runs.
 */
export const sourcePhaseSchema = z.object({
  handoffId: z.string(),
  vmId: z.string(),
  phase: z.enum(['snapshot', 'live', 'stopped', 'commit-sent', 'released']),
  /** The stream attempt the phase belongs to (0 before the first). */
  attempt: z.number().int().min(0),
  at: z.string(),
});
export type SourcePhase = z.infer<typeof sourcePhaseSchema>;
export type SourcePhaseName = SourcePhase['phase'];

/** The file a VM's source-side handoff phase is kept in, inside its folder. */
export const SOURCE_PHASE_FILE = 'source-handoff.json';

/** What the target said of a handoff when asked (abort): it runs the VM, or it holds nothing of it. */
export type TargetAnswer = 'committed' | 'released' | 'no-answer';

export type SourceRecovery =
  | { action: 'resume-here'; reason: string }
  | { action: 'stay-stopped'; reason: string }
  | { action: 'wait-for-target'; reason: string }
  | { action: 'nothing'; reason: string };

/**
 * Whether the source's copy may run again, from its persisted phase and what the target said.
 * The rule (DESIGN, rules under faults): the source resumes on its own only while nothing it sent
 * lets the target run the VM — its end frame and the commit behind it have not left; after that,
 * only on the target's explicit answer that it holds nothing; no answer is not an answer.
 */
export function decideSourceRecovery(phase: SourcePhase | undefined, target: TargetAnswer): SourceRecovery {
  if (phase === undefined) return { action: 'nothing', reason: 'no handoff of this VM is recorded here' };
  switch (phase.phase) {
    case 'released':
      return { action: 'resume-here', reason: 'the handoff was already released here; the copy here is the VM' };
    case 'snapshot':
    case 'live':
    case 'stopped':
      return {
        action: 'resume-here',
        reason: `the end frame never left (phase ${phase.phase}, attempt ${phase.attempt}): the target cannot have committed`,
      };
    case 'commit-sent':
      if (target === 'released') return { action: 'resume-here', reason: `the commit frame of attempt ${phase.attempt} left, and the target answered that it holds nothing of the handoff` };
      if (target === 'committed') return { action: 'stay-stopped', reason: `the target committed on attempt ${phase.attempt}: it runs the VM` };
      return { action: 'wait-for-target', reason: `the commit frame of attempt ${phase.attempt} left and the target has not answered whether it ran the VM: the copy here stays stopped` };
  }
}
