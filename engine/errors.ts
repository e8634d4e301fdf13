/**
 * Failures the engine names. `retryable: false` means trying the same step again cannot help
 * (bad input, missing base image, state that failed verification); the orchestrator then rolls
 * back instead of retrying.
 */
export type HandoffErrorCode =
  | 'VM_NOT_FOUND'
  | 'VM_EXISTS'
  | 'VM_NOT_RUNNING'
  | 'BASE_IMAGE_MISSING'
  | 'BASE_IMAGE_CORRUPT'
  | 'HANDOFF_NOT_FOUND'
  | 'STATE_MISMATCH'
  | 'PROTOCOL'
  | 'GUEST_DID_NOT_CONTINUE'
  /** The VM's host process is gone, and QEMU with it: that copy of the VM no longer exists. */
  | 'VM_LOST'
  /** Another handoff of the same VM holds it. */
  | 'VM_BUSY'
  /** The end frame left and the outcome at the target is not known here: only its answer decides. */
  | 'HANDOFF_IN_DOUBT'
  /** The target cannot run the VM (its QEMU did not start, say): trying again will not help. */
  | 'TARGET_CANNOT_RUN'
  /** A request that does not say what it must (an activity's input that fails its schema). */
  | 'BAD_INPUT'
  /** The cloudlet is being drained: it takes no new VMs, launched or handed to it. */
  | 'CLOUDLET_DRAINING';

const NOT_RETRYABLE: ReadonlySet<HandoffErrorCode> = new Set([
  'VM_NOT_FOUND',
  'VM_EXISTS',
  'VM_NOT_RUNNING',
  'BASE_IMAGE_MISSING',
  'BASE_IMAGE_CORRUPT',
  'HANDOFF_NOT_FOUND',
  'STATE_MISMATCH',
  'GUEST_DID_NOT_CONTINUE',
  'VM_LOST',
  'VM_BUSY',
  'HANDOFF_IN_DOUBT',
  'TARGET_CANNOT_RUN',
  'BAD_INPUT',
  'CLOUDLET_DRAINING',
]);

const ALL_CODES: ReadonlySet<string> = new Set<HandoffErrorCode>([...NOT_RETRYABLE, 'PROTOCOL']);

/** A code that came from the other side (a wire refusal), if it is one this side knows. */
export function knownCode(code: string | undefined): HandoffErrorCode | undefined {
  return code !== undefined && ALL_CODES.has(code) ? (code as HandoffErrorCode) : undefined;
}

export class HandoffError extends Error {
  readonly retryable: boolean;
  constructor(
    readonly code: HandoffErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'HandoffError';
    this.retryable = !NOT_RETRYABLE.has(code);
  }
}
