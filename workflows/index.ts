// The workflow bundle's entry: every workflow type the workers run.
export { handoff } from './handoff.js';
export { launchVm, describeVm, destroyVm } from './vm-lifecycle.js';
