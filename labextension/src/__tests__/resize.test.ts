import { strict as assert } from 'node:assert';
import { test } from 'node:test';

import { IJobDetail, IReplica, JobPhase } from '../model';
import {
  liveWorkers,
  resizeControls,
  resizeMarks,
  resizingText
} from '../resize';

function replica(role: string, index: number, state = 'running'): IReplica {
  return {
    role,
    index,
    name: `${role}-${index}`,
    state: state as IReplica['state'],
    restarts: 0,
    pid: null,
    host: null,
    exit_code: null,
    started: null,
    message: null,
    launch: null
  };
}

function job(phase: JobPhase, replicas: IReplica[]): IJobDetail {
  return {
    name: 'ps-job',
    phase,
    done: ['succeeded', 'failed', 'stopped'].includes(phase),
    replicas
  } as unknown as IJobDetail;
}

const PS3 = [
  replica('ps', 0),
  replica('chief', 0),
  replica('worker', 0),
  replica('worker', 1),
  replica('worker', 2)
];

test('removed workers do not count', () => {
  assert.equal(liveWorkers(PS3), 3);
  const down = [...PS3.slice(0, 4), replica('worker', 2, 'removed')];
  assert.equal(liveWorkers(down), 2);
  assert.equal(resizeControls(job('running', down), false).workers, 2);
});

test('a running job can be resized both ways', () => {
  assert.deepEqual(resizeControls(job('running', PS3), false), {
    workers: 3,
    canShrink: true,
    canGrow: true,
    reason: ''
  });
});

test('a resize in flight disables both buttons', () => {
  const c = resizeControls(job('running', PS3), true);
  assert.ok(!c.canShrink && !c.canGrow);
  assert.equal(c.reason, 'A resize is in progress.');
});

test('a job that is not running cannot be resized, and says why', () => {
  const done = resizeControls(job('stopped', PS3), false);
  assert.ok(!done.canShrink && !done.canGrow);
  assert.equal(
    done.reason,
    'The job has stopped; only a running job can be resized.'
  );
  const pending = resizeControls(job('pending', PS3), false);
  assert.ok(!pending.canShrink && !pending.canGrow);
  assert.ok(pending.reason.includes('once it runs'));
  const none = resizeControls(null, false);
  assert.ok(!none.canShrink && !none.canGrow && none.workers === 0);
});

test('the last worker cannot be removed, but one can be added', () => {
  const one = [replica('ps', 0), replica('chief', 0), replica('worker', 0)];
  const c = resizeControls(job('running', one), false);
  assert.ok(!c.canShrink && c.canGrow && c.reason === '');
});

test('the in-flight line names both counts', () => {
  assert.equal(resizingText(3, 2), 'resizing 3 → 2 workers…');
});

test('restart-resizes are marked on the curve, live ones are not', () => {
  const history = [
    { time: 1, from: 3, to: 2, how: 'live', removed: ['worker-2'] },
    { time: 2, from: 2, to: 3, how: 'restart', epoch: 4, step: 150 },
    { time: 3, from: 3, to: 4, how: 'restart' } // no checkpoint position known
  ];
  assert.deepEqual(resizeMarks(history, 'step'), [{ x: 150, label: '2→3' }]);
  assert.deepEqual(resizeMarks(history, 'epoch'), [{ x: 5, label: '2→3' }]);
  assert.deepEqual(resizeMarks(undefined, 'step'), []);
});
