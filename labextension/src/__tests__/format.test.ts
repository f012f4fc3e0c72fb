import { strict as assert } from 'node:assert';
import { test } from 'node:test';

import {
  ageSince,
  cleanLog,
  formatAge,
  formatCounts,
  exitText,
  foldedLog,
  formatMetric,
  launchLabel,
  pickSeries,
  phaseClass,
  phaseLabel,
  preferredMetric,
  scalePoints,
  sparklinePoints,
  staleNote,
  strategyLabel,
  trainCellProblem,
  trainFlags,
  trainMagic,
  trainOptionsProblem
} from '../format';
import { ITrainOptions } from '../model';

test('ages are compact and never negative', () => {
  assert.equal(formatAge(0), '0s');
  assert.equal(formatAge(59.9), '59s');
  assert.equal(formatAge(61), '1m');
  assert.equal(formatAge(3600), '1h');
  assert.equal(formatAge(3 * 3600 + 20 * 60), '3h 20m');
  assert.equal(formatAge(2 * 86400 + 5), '2d');
  assert.equal(formatAge(-5), '0s');
  assert.equal(ageSince(1000, 1_090_000), '1m');
});

test('replica counts list states in a fixed order and skip zeros', () => {
  assert.equal(
    formatCounts({ succeeded: 1, pending: 1, running: 3, failed: 0 }),
    '3 running · 1 pending · 1 succeeded'
  );
  assert.equal(formatCounts({ weird: 2, stopped: 4 }), '4 stopped · 2 weird');
  assert.equal(formatCounts({}), '');
});

test('phase chips have a label and a class per phase', () => {
  assert.equal(phaseLabel('succeeded'), 'Succeeded');
  assert.equal(phaseClass('failed'), 'tfk8s-chip tfk8s-chip-failed');
  assert.equal(phaseClass('exploded'), 'tfk8s-chip tfk8s-chip-unknown');
  assert.equal(strategyLabel('parameter_server'), 'PS');
  assert.equal(strategyLabel('multi_worker_mirrored'), 'MWMS');
});

test('metric values keep 4 significant digits', () => {
  assert.equal(formatMetric(0.123456), '0.1235');
  assert.equal(formatMetric(2), '2');
  assert.equal(formatMetric(0.00001234), '1.23e-5');
  assert.equal(formatMetric(123456789), '1.23e+8');
  assert.equal(formatMetric(null), '–');
  assert.equal(formatMetric(NaN), '–');
  assert.equal(formatMetric(Infinity), '∞');
});

test('the default curve is loss, else the first metric by name', () => {
  assert.equal(preferredMetric(['accuracy', 'loss']), 'loss');
  assert.equal(preferredMetric(['val_mae', 'mae']), 'mae');
  assert.equal(preferredMetric([]), null);
});

test('points scale into the box, y down, dropping non-finite values', () => {
  const pts = scalePoints([0, 5, 10], [2, NaN, 0], 104, 24, 2);
  assert.deepEqual(pts, [
    [2, 2],
    [102, 22]
  ]);
  // A flat series sits in the middle; a single point too.
  assert.deepEqual(scalePoints([0, 1], [3, 3], 10, 10, 0), [
    [0, 5],
    [10, 5]
  ]);
  assert.deepEqual(scalePoints([7], [1], 10, 10, 0), [[5, 5]]);
  // Log scale ignores values <= 0.
  assert.equal(scalePoints([0, 1, 2], [1, 0, 100], 10, 10, 0, true).length, 2);
  assert.deepEqual(scalePoints([], [], 10, 10), []);
});

test('a sparkline of a falling loss goes down and to the right', () => {
  const attr = sparklinePoints([4, 2, 1, 0.5], 80, 22);
  const pts = attr.split(' ').map(p => p.split(',').map(Number));
  assert.equal(pts.length, 4);
  assert.deepEqual(pts[0], [2, 2]);
  assert.deepEqual(pts[3], [78, 20]);
  for (let i = 1; i < pts.length; i++) {
    assert.ok(pts[i][0] > pts[i - 1][0] && pts[i][1] > pts[i - 1][1]);
  }
  assert.equal(sparklinePoints([], 80, 22), '');
});

const opts = (o: Partial<ITrainOptions> = {}): ITrainOptions => ({
  strategy: 'auto',
  ps: 1,
  workers: 2,
  gpus: 0,
  backend: 'local',
  ...o
});

test('the magic keeps the cell source byte for byte under the flags line', () => {
  const source =
    'model = build_model(LR)\nmodel.fit(ds, epochs=2)  # trailing\n\n';
  const code = trainMagic(opts(), source);
  assert.equal(
    code,
    '%%tfk8s_train --ps 1 --workers 2 --backend local\n' + source
  );
  assert.equal(
    trainFlags(
      opts({
        strategy: 'multi_worker_mirrored',
        ps: 0,
        gpus: 1,
        backend: 'kubernetes'
      })
    ),
    '--strategy multi_worker_mirrored --ps 0 --workers 2 --gpus 1 --backend kubernetes'
  );
});

test('form settings that the spec would refuse are explained before launch', () => {
  assert.equal(trainOptionsProblem(opts()), null);
  assert.equal(
    trainOptionsProblem(opts({ strategy: 'multi_worker_mirrored', ps: 0 })),
    null
  );
  assert.match(trainOptionsProblem(opts({ workers: 0 }))!, /at least 1/);
  assert.match(trainOptionsProblem(opts({ workers: 1.5 }))!, /whole number/);
  assert.match(trainOptionsProblem(opts({ ps: -1 }))!, /Parameter servers/);
  assert.match(
    trainOptionsProblem(opts({ strategy: 'multi_worker_mirrored', ps: 1 }))!,
    /set ps to 0/
  );
  assert.match(
    trainOptionsProblem(opts({ strategy: 'parameter_server', ps: 0 }))!,
    /at least 1 parameter server/
  );
  assert.match(
    trainOptionsProblem(opts({ strategy: 'mirrored', ps: 0, workers: 2 }))!,
    /workers to 1/
  );
  assert.match(trainOptionsProblem(opts({ strategy: 'fast' }))!, /unknown/);
});

test('cells that cannot be trained say why', () => {
  assert.equal(trainCellProblem('model.fit(x, y)\n'), null);
  assert.match(trainCellProblem('  \n\n')!, /empty/);
  assert.match(
    trainCellProblem('%%tfk8s_train --workers 2\nfit()')!,
    /Shift\+Enter/
  );
  assert.match(trainCellProblem('%%time\nfit()')!, /%%time/);
});

test('curves use per-step points unless per-epoch points are more', () => {
  const xy = (n: number) => ({
    x: Array.from({ length: n }, (_, i) => i),
    y: Array.from({ length: n }, (_, i) => 1 / (i + 1))
  });
  assert.equal(
    pickSeries({ step: { loss: xy(50) }, epoch: { loss: xy(3) } }, 'loss')!
      .kind,
    'step'
  );
  assert.equal(
    pickSeries({ step: { loss: xy(1) }, epoch: { loss: xy(3) } }, 'loss')!.kind,
    'epoch'
  );
  assert.equal(
    pickSeries({ step: {}, epoch: { mae: xy(2) } }, 'mae')!.xy.x.length,
    2
  );
  assert.equal(pickSeries({ step: {}, epoch: {} }, 'loss'), null);
});

test('logs read like a terminal: no escapes, progress bars collapsed, no protocol lines', () => {
  const raw =
    'Epoch 1/3\n' +
    '\x1b[1m 1/20\x1b[0m \x1b[32m━\x1b[0m\r\x1b[1m20/20\x1b[0m done - loss: 1.05\n' +
    '@tfk8s {"type":"epoch","seq":5}\n' +
    '12/20 ━━━@tfk8s {"type":"metric"}\n' +
    'abc\b\bX\n' +
    'cell done';
  assert.equal(
    cleanLog(raw),
    'Epoch 1/3\n20/20 done - loss: 1.05\n12/20 ━━━\naX\ncell done'
  );
});

test('a Keras progress bar redrawn many times in one line reads as its last state', () => {
  // Keras erases the bar with backspaces, returns to the line start and draws it again, all in one line;
  // the runner's protocol lines cut in with a newline of their own.
  const bar = (n: number) =>
    `${String(n).padStart(2)}/20 ━━━━ 0s 2ms/step - loss: ${n}.5`;
  const erase = (s: string) => '\b'.repeat(s.length);
  const raw =
    'Epoch 1/3\n' +
    `\r${bar(1)}\n` +
    '@tfk8s {"type":"metric","seq":2}\n' +
    `${erase(bar(1))}\r${bar(17)}${erase(bar(17))}\r${bar(20)}\n` +
    'Epoch 2/3';
  assert.equal(cleanLog(raw), `Epoch 1/3\n${bar(1)}\n${bar(20)}\nEpoch 2/3`);
  // a shorter redraw leaves the end of the longer one, as on a terminal
  assert.equal(cleanLog('abcdef\rXY'), 'XYcdef');
});

test('a stale panel says how to follow its job again', () => {
  assert.equal(
    staleNote('mnist-ps'),
    'The kernel restarted: this panel no longer updates and shows the last known state; %tfk8s_attach mnist-ps follows the job again.'
  );
  assert.ok(staleNote('').includes('%tfk8s_attach NAME'));
});

test('the log folds TensorFlow start-up noise unless show all', () => {
  const log = [
    'WARNING: All log messages before absl::InitializeLog() is called are written to STDERR',
    'I0000 00:00:1796051095.595902   17194 port.cc:153] oneDNN custom operations are on.',
    'E0000 00:00:1796051099.292135   17194 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR (303)',
    'Epoch 1/3',
    '@tfk8s {"v":1,"type":"metric"}'
  ].join('\n');
  assert.equal(
    foldedLog(log, false),
    '(3 TensorFlow start-up lines folded; show all to see them)\nEpoch 1/3'
  );
  const all = foldedLog(log, true);
  assert.ok(all.includes('cuInit') && all.endsWith('Epoch 1/3'));
  assert.equal(foldedLog('Epoch 1/3', false), 'Epoch 1/3');
});

test('an exit reads as its code or the signal that ended it', () => {
  assert.equal(exitText(null, 'running'), '');
  assert.equal(exitText(0, 'succeeded'), '0');
  assert.equal(exitText(1, 'failed'), '1');
  assert.equal(exitText(-15, 'stopped'), 'stopped (SIGTERM)');
  assert.equal(exitText(-9, 'failed'), 'SIGKILL');
});

test('the launch label says how the current replicas started', () => {
  const r = (launch: string | null, state = 'running') => ({ launch, state });
  assert.equal(launchLabel([r('warm'), r('warm')]), 'warm start');
  assert.equal(launchLabel([r('kept'), r('kept'), r('kept')]), 'kept start');
  assert.equal(
    launchLabel([r('cold'), r('warm'), r('kept'), r('warm')]),
    'start: 1 kept, 2 warm, 1 cold'
  );
  assert.equal(launchLabel([r('warm'), r('cold', 'removed')]), 'warm start');
  assert.equal(launchLabel([r(null), r(null)]), null);
  assert.equal(launchLabel([]), null);
});
