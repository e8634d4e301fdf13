import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HandoffError } from '../engine/errors.js';
import { checked } from '../activities/inputs.js';
import { MAX_FAILURE_MESSAGE_CHARS, boundedMessage } from '../activities/failures.js';

// What enters a worker as an activity's input is outside data, and what leaves it as a failure
// goes into history: both are checked here, without a worker.

test('an activity input that fails its schema is a non-retryable BAD_INPUT naming the field', () => {
  const ok = checked('negotiateBaseImage', { handoffId: 'handoff-vm1/0b6c', vmId: 'vm1', baseImageId: 'base-0123456789abcdef', source: 'A' });
  assert.equal(ok.source, 'A');
  const cases: Array<[string, unknown, RegExp]> = [
    ['a source that is no cloudlet name', { handoffId: 'h', vmId: 'vm1', baseImageId: 'base-0123456789abcdef', source: '../B' }, /input source: a cloudlet name/],
    ['no source at all', { handoffId: 'h', vmId: 'vm1', baseImageId: 'base-0123456789abcdef' }, /input source:/],
    ['a handoff id with a newline', { handoffId: 'h\nforged log line', vmId: 'vm1', baseImageId: 'base-0123456789abcdef', source: 'A' }, /input handoffId: a handoff id is 1-300 printable ASCII/],
    ['a port out of range', { handoffId: 'h', endpoint: { host: '10.0.0.1', port: 70000, cloudlet: 'B' } }, /input endpoint\.port/],
  ];
  for (const [what, input, message] of cases) {
    const name = 'endpoint' in (input as object) ? 'streamOverlay' : 'negotiateBaseImage';
    assert.throws(() => checked(name, input), (err: unknown) => {
      assert.ok(err instanceof HandoffError, what);
      assert.equal(err.code, 'BAD_INPUT', what);
      assert.equal(err.retryable, false, what);
      assert.match(err.message, message, what);
      return true;
    });
  }
});

test('a failure message goes to history escaped and bounded', () => {
  assert.equal(boundedMessage('QEMU exited (code 1)'), 'QEMU exited (code 1)');
  const console = `serial: \x1b[2Jlogin: root\r\n${'x'.repeat(5000)}`;
  const bounded = boundedMessage(console);
  assert.doesNotMatch(bounded, /[\x00-\x08\x0b-\x1f\x7f]/, 'no control character survives');
  assert.ok(bounded.startsWith('serial: \\x1b[2Jlogin: root\\x0d\n'), bounded.slice(0, 40));
  assert.ok(bounded.length <= MAX_FAILURE_MESSAGE_CHARS + 80, `${bounded.length} characters`);
  assert.match(bounded, /… \(\d+ more characters in the worker's log\)$/);
});
