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
  | 'GUEST_DID_NOT_CONTINUE';

const NOT_RETRYABLE: ReadonlySet<HandoffErrorCode> = new Set([
  'VM_NOT_FOUND',
  'VM_EXISTS',
  'VM_NOT_RUNNING',
  'BASE_IMAGE_MISSING',
  'BASE_IMAGE_CORRUPT',
  'HANDOFF_NOT_FOUND',
  'STATE_MISMATCH',
  'GUEST_DID_NOT_CONTINUE',
]);

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
