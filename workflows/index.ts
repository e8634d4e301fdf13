// The workflow bundle's entry: every workflow type the workers run.
export { handoff } from './handoff.js';
export { launchVm, describeVm, destroyVm, describeCloudlets, measureVm } from './vm-lifecycle.js';
export { handleEvent } from './handle-event.js';
export { drainCloudlet } from './drain.js';
export { monitorLoad } from './load-monitor.js';
