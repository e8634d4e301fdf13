import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decideSourceRecovery, type SourcePhase, type TargetAnswer } from '../engine/handoff/source-phase.js';

// The source's rule under faults, as a table: its copy runs again on its own only while its end
// frame and the commit behind it have not left; after that only on the target's explicit "released".

const at = (phase: SourcePhase['phase']): SourcePhase => ({ handoffId: 'h', vmId: 'vm', phase, attempt: 2, at: '2026-12-02T00:00:00Z' });
const answers: TargetAnswer[] = ['committed', 'released', 'no-answer'];

test('before the end frame left, the source resumes whatever the target says', () => {
  for (const phase of ['snapshot', 'live', 'stopped'] as const) {
    for (const answer of answers) {
      const d = decideSourceRecovery(at(phase), answer);
      assert.equal(d.action, 'resume-here', `${phase} / ${answer}`);
      assert.match(d.reason, new RegExp(`end frame never left \\(phase ${phase}, attempt 2\\)`));
    }
  }
});

test('once the end and commit frames may have left, only the target decides: released resumes, committed stays stopped, silence waits', () => {
  assert.equal(decideSourceRecovery(at('commit-sent'), 'released').action, 'resume-here');
  assert.equal(decideSourceRecovery(at('commit-sent'), 'committed').action, 'stay-stopped');
  const silent = decideSourceRecovery(at('commit-sent'), 'no-answer');
  assert.equal(silent.action, 'wait-for-target');
  assert.match(silent.reason, /commit frame of attempt 2 left .* stays stopped/);
});

test('no record means no handoff to recover; a released one runs here', () => {
  assert.equal(decideSourceRecovery(undefined, 'no-answer').action, 'nothing');
  assert.equal(decideSourceRecovery(at('released'), 'no-answer').action, 'resume-here');
});
