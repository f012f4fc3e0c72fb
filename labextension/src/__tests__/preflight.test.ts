import { strict as assert } from 'node:assert';
import { test } from 'node:test';

import { ICheckReport, ICheckRow } from '../model';
import {
  checkHeadline,
  checkOptions,
  checkRowClass,
  checkingText
} from '../preflight';

const EMPTY = { context: '', namespace: '', image: '', gpus: '' };

test('empty fields are left to the configured defaults', () => {
  assert.deepEqual(checkOptions(EMPTY), { options: {} });
  assert.deepEqual(
    checkOptions({
      context: ' team ',
      namespace: 'ml',
      image: 'tf:2.21',
      gpus: ' 2 '
    }),
    { options: { context: 'team', namespace: 'ml', image: 'tf:2.21', gpus: 2 } }
  );
  assert.deepEqual(checkOptions({ ...EMPTY, gpus: '0' }), {
    options: { gpus: 0 }
  });
});

test('a GPU count that is not a count is one sentence, as the server says it', () => {
  for (const bad of ['-1', '1.5', 'two']) {
    assert.deepEqual(checkOptions({ ...EMPTY, gpus: bad }), {
      problem: `gpus="${bad}" is not a number of GPUs; give a whole number of at least 0, such as 1.`
    });
  }
});

const row = (name: string, mark: string): ICheckRow => ({
  name,
  mark,
  ok: mark !== '✗',
  message: `${name} message.`
});

test('rows are classed by their mark', () => {
  assert.equal(checkRowClass(row('namespace', '✓')), 'tfk8s-check-ok');
  assert.equal(checkRowClass(row('create jobs', '✗')), 'tfk8s-check-fail');
  assert.equal(checkRowClass(row('storage', '–')), 'tfk8s-check-unknown');
});

test('the headline names the failed checks', () => {
  const report: ICheckReport = {
    context: 'current context',
    namespace: 'default',
    ok: false,
    summary: 'preflight of namespace default (current context): 2 problem(s).',
    checks: [row('namespace', '✓'), row('create jobs', '✗'), row('GPUs', '✗')]
  };
  assert.equal(
    checkHeadline(report),
    'preflight of namespace default (current context): 2 problem(s). ✗ create jobs, GPUs'
  );
  const ready = {
    ...report,
    ok: true,
    summary: 'preflight of namespace default (current context): ready.',
    checks: [row('namespace', '✓')]
  };
  assert.equal(checkHeadline(ready), ready.summary);
});

test('an image check says it takes a while', () => {
  assert.equal(checkingText({}), 'Checking the cluster…');
  assert.ok(checkingText({ image: 'tf:2.21' }).includes('image tf:2.21'));
});
