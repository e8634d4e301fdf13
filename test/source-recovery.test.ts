import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decideSourceRecovery, type SourcePhase, type TargetAnswer } from '../engine/handoff/source-phase.js';

// The source's rule under faults, as a table: its copy runs again on its own only while its
// commit frame has not left; after that only on the target's explicit "released".

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

test('after the end frame left but before the commit frame, the source still resumes on its own (unless the target says it runs the VM)', () => {
  for (const answer of ['released', 'no-answer'] as const) {
    const d = decideSourceRecovery(at('end-sent'), answer);
    assert.equal(d.action, 'resume-here', answer);
    assert.match(d.reason, /commit frame did not/);
  }
  assert.equal(decideSourceRecovery(at('end-sent'), 'committed').action, 'stay-stopped');
});

test('after the commit frame left, only the target decides: released resumes, committed stays stopped, silence waits', () => {
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
