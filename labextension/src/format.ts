/**
 * Pure formatting and validation used by the side panel, the job view and the train form.
 * No JupyterLab imports here, so it is unit-tested under plain Node.
 */
import type { ITrainOptions, ReplicaCounts } from './model';

/** Replica states in the order the counts are shown. */
export const STATE_ORDER = [
  'running',
  'starting',
  'restarting',
  'pending',
  'succeeded',
  'failed',
  'stopped',
  'removed'
];

export const STRATEGIES = [
  'auto',
  'parameter_server',
  'multi_worker_mirrored',
  'mirrored'
];

/** A compact age: `42s`, `5m`, `3h 20m`, `2d`. */
export function formatAge(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) {
    return `${s}s`;
  }
  const m = Math.floor(s / 60);
  if (m < 60) {
    return `${m}m`;
  }
  const h = Math.floor(m / 60);
  if (h < 24) {
    return m % 60 ? `${h}h ${m % 60}m` : `${h}h`;
  }
  return `${Math.floor(h / 24)}d`;
}

/** Age of something created at `created` (Unix seconds) as seen at `nowMs` (milliseconds). */
export function ageSince(created: number, nowMs: number = Date.now()): string {
  return formatAge(nowMs / 1000 - created);
}

/** `3 running · 1 pending`; states in a fixed order, unknown ones last. */
export function formatCounts(counts: ReplicaCounts): string {
  const known = STATE_ORDER.filter(s => counts[s]);
  const other = Object.keys(counts)
    .filter(s => !STATE_ORDER.includes(s) && counts[s])
    .sort();
  return [...known, ...other].map(s => `${counts[s]} ${s}`).join(' · ');
}

/** The label of a phase chip: `Running`, `Succeeded`, ... */
export function phaseLabel(phase: string): string {
  return phase ? phase[0].toUpperCase() + phase.slice(1) : 'Unknown';
}

/** CSS classes of a phase chip. */
export function phaseClass(phase: string): string {
  const known = ['pending', 'running', 'succeeded', 'failed', 'stopped'];
  return `tfk8s-chip tfk8s-chip-${known.includes(phase) ? phase : 'unknown'}`;
}

/** A metric value with 4 significant digits, exponent form for very small or large values. */
export function formatMetric(value: number | null | undefined): string {
  if (value === null || value === undefined || Number.isNaN(value)) {
    return '–';
  }
  if (!Number.isFinite(value)) {
    return value > 0 ? '∞' : '-∞';
  }
  const a = Math.abs(value);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) {
    return value.toExponential(2);
  }
  return String(Number(value.toPrecision(4)));
}

/**
 * How a job's current replicas started (local backend): `kept start`, `warm start`, `cold start`, or
 * `start: 2 warm, 1 cold` when they differ; null when no replica says (Kubernetes, or none started yet).
 */
export function launchLabel(
  replicas: { launch: string | null; state: string }[]
): string | null {
  const order = ['kept', 'warm', 'cold'];
  const kinds = new Map<string, number>();
  for (const r of replicas) {
    if (r.launch && r.state !== 'removed') {
      kinds.set(r.launch, (kinds.get(r.launch) ?? 0) + 1);
    }
  }
  if (kinds.size === 0) {
    return null;
  }
  if (kinds.size === 1) {
    return `${[...kinds.keys()][0]} start`;
  }
  const rank = (k: string) =>
    order.includes(k) ? order.indexOf(k) : order.length;
  const sorted = [...kinds.keys()].sort(
    (a, b) => rank(a) - rank(b) || a.localeCompare(b)
  );
  return 'start: ' + sorted.map(k => `${kinds.get(k)} ${k}`).join(', ');
}

/** Short strategy names for narrow rows. */
export function strategyLabel(strategy: string): string {
  const short: { [k: string]: string } = {
    parameter_server: 'PS',
    multi_worker_mirrored: 'MWMS',
    mirrored: 'Mirrored'
  };
  return short[strategy] ?? strategy;
}

/**
 * Scale points into a `width` × `height` box (SVG coordinates, y down) with `pad` pixels of margin.
 * Non-finite values are dropped; `logY` plots log10 of positive values only.
 */
export function scalePoints(
  xs: number[],
  ys: number[],
  width: number,
  height: number,
  pad = 2,
  logY = false
): [number, number][] {
  const pts: [number, number][] = [];
  for (let i = 0; i < Math.min(xs.length, ys.length); i++) {
    let y = ys[i];
    if (logY) {
      y = y > 0 ? Math.log10(y) : NaN;
    }
    if (Number.isFinite(xs[i]) && Number.isFinite(y)) {
      pts.push([xs[i], y]);
    }
  }
  if (pts.length === 0) {
    return [];
  }
  let [x0, x1, y0, y1] = [Infinity, -Infinity, Infinity, -Infinity];
  for (const [x, y] of pts) {
    x0 = Math.min(x0, x);
    x1 = Math.max(x1, x);
    y0 = Math.min(y0, y);
    y1 = Math.max(y1, y);
  }
  const w = width - 2 * pad;
  const h = height - 2 * pad;
  const round = (v: number) => Math.round(v * 10) / 10;
  return pts.map(([x, y]) => [
    round(pad + (x1 > x0 ? ((x - x0) / (x1 - x0)) * w : w / 2)),
    round(pad + (y1 > y0 ? (1 - (y - y0) / (y1 - y0)) * h : h / 2))
  ]);
}

/** The `points` attribute of an SVG polyline for a sparkline of `values` (x = index). */
export function sparklinePoints(
  values: number[],
  width: number,
  height: number,
  pad = 2
): string {
  const xs = values.map((_, i) => i);
  return scalePoints(xs, values, width, height, pad)
    .map(([x, y]) => `${x},${y}`)
    .join(' ');
}

/** Why a cell cannot be trained as is, or null when it can. */
export function trainCellProblem(source: string): string | null {
  const first = source.split('\n').find(l => l.trim() !== '') ?? '';
  if (first.trim() === '') {
    return 'The cell is empty; write the training code (build the model, call fit) and try again.';
  }
  if (first.trimStart().startsWith('%%tfk8s_train')) {
    return 'This cell already starts with %%tfk8s_train; run it with Shift+Enter instead.';
  }
  if (first.trimStart().startsWith('%%')) {
    return `This cell starts with the cell magic ${first.trim().split(/\s/)[0]}; only plain Python cells can be trained on the cluster.`;
  }
  return null;
}

/** Why the form's settings are invalid, or null when they are fine (mirrors the spec's rules). */
export function trainOptionsProblem(o: ITrainOptions): string | null {
  const isCount = (v: number) => Number.isInteger(v) && v >= 0;
  if (!STRATEGIES.includes(o.strategy)) {
    return `Strategy ${o.strategy} is unknown; choose one of ${STRATEGIES.join(', ')}.`;
  }
  if (!isCount(o.workers) || o.workers < 1) {
    return 'Workers must be a whole number of at least 1.';
  }
  if (!isCount(o.ps)) {
    return 'Parameter servers must be a whole number, 0 or more.';
  }
  if (!isCount(o.gpus)) {
    return 'GPUs per worker must be a whole number, 0 or more.';
  }
  if (o.strategy === 'parameter_server' && o.ps < 1) {
    return 'parameter_server needs at least 1 parameter server; set ps to 1 or more, or choose multi_worker_mirrored.';
  }
  if (
    (o.strategy === 'multi_worker_mirrored' || o.strategy === 'mirrored') &&
    o.ps > 0
  ) {
    return `${o.strategy} is synchronous and has no parameter servers; set ps to 0, or choose parameter_server.`;
  }
  if (o.strategy === 'mirrored' && o.workers > 1) {
    return 'mirrored runs on one machine; set workers to 1, or choose multi_worker_mirrored.';
  }
  if (!/^[a-z]+$/.test(o.backend)) {
    return `Backend ${o.backend} is unknown; choose local or kubernetes.`;
  }
  return null;
}

/** The flags of `%%tfk8s_train` for these settings (`--strategy` only when not auto). */
export function trainFlags(o: ITrainOptions): string {
  const flags = [];
  if (o.strategy !== 'auto') {
    flags.push(`--strategy ${o.strategy}`);
  }
  flags.push(`--ps ${o.ps}`, `--workers ${o.workers}`);
  if (o.gpus) {
    flags.push(`--gpus ${o.gpus}`);
  }
  flags.push(`--backend ${o.backend}`);
  return flags.join(' ');
}

/** The code sent to the kernel: the magic line, then the cell's own source unchanged. */
export function trainMagic(o: ITrainOptions, source: string): string {
  return `%%tfk8s_train ${trainFlags(o)}\n${source}`;
}

/** The kernel code that loads the magics quietly (no "already loaded" message). */
export const LOAD_MAGICS =
  'get_ipython().extension_manager.load_extension("tfk8s_jupyter")';

/** The metric a curve shows by default: `loss` when present, else the first by name. */
export function preferredMetric(names: string[]): string | null {
  if (names.length === 0) {
    return null;
  }
  return names.includes('loss') ? 'loss' : [...names].sort()[0];
}

/** Parallel x/y arrays. */
export interface IXY {
  x: number[];
  y: number[];
}

/**
 * The series a curve draws for `metric`: per step, or per epoch when that has more points
 * (a fast job reports one step point per metric interval but one point per epoch).
 */
export function pickSeries(
  series: { step: { [m: string]: IXY }; epoch: { [m: string]: IXY } },
  metric: string
): { kind: 'step' | 'epoch'; xy: IXY } | null {
  const step = series.step[metric];
  const epoch = series.epoch[metric];
  if (!step && !epoch) {
    return null;
  }
  if (step && step.x.length >= (epoch?.x.length ?? 0)) {
    return { kind: 'step', xy: step };
  }
  return { kind: 'epoch', xy: epoch! };
}

// eslint-disable-next-line no-control-regex
const ANSI = /\x1b\[[0-9;?]*[A-Za-z]/g;

/**
 * TensorFlow, absl and CUDA start-up lines every replica prints (on a CPU machine too), TensorFlow's
 * notes on cells defined in a notebook and its slow-callback warning; mirrors `display_text.py`.
 */
const STARTUP_NOISE = new RegExp(
  [
    '^WARNING: All log messages before absl::InitializeLog\\(\\) is called',
    '^[IWE]\\d{4} [\\d:. ]+\\s+\\d+ (port|cudart_stub|cuda_platform|cuda_dnn|cuda_fft|cuda_blas|cuda_executor|cpu_feature_guard|computation_placer|tf_trt|gpu_device|dso_loader)\\.cc:\\d+\\]',
    'oneDNN custom operations are on',
    'Could not find cuda drivers',
    'failed call to cuInit',
    'Unable to register cu(DNN|FFT|BLAS) factory',
    'TF-TRT Warning',
    'This TensorFlow binary is optimized to use available CPU instructions',
    '^To enable the following instructions: .* rebuild TensorFlow',
    'AutoGraph could not transform <',
    '^Cause: Unable to locate the source code of <',
    '^To silence this warning, decorate the function with @tf\\.autograph',
    'Callback method `on_train_batch_(begin|end)` is slow compared to the batch time'
  ].join('|')
);

/** Whether a log line is TensorFlow start-up noise rather than the cell's or the runner's words. */
export function isStartupNoise(line: string): boolean {
  return STARTUP_NOISE.test(line);
}

/**
 * A log as people read it (see {@link cleanLog}), with TensorFlow's start-up lines folded into one
 * first line saying how many there were, unless `showAll`.
 */
export function foldedLog(text: string, showAll: boolean): string {
  const lines = cleanLog(text).split('\n');
  if (showAll) {
    return lines.join('\n');
  }
  const kept = lines.filter(l => !isStartupNoise(l));
  const folded = lines.length - kept.length;
  if (folded === 0) {
    return kept.join('\n');
  }
  const noun = folded === 1 ? 'line' : 'lines';
  return [
    `(${folded} TensorFlow start-up ${noun} folded; show all to see them)`,
    ...kept
  ].join('\n');
}

/**
 * A replica log as a terminal would show it: ANSI colours removed, backspaces and carriage returns
 * applied (Keras progress bars), and the `@tfk8s {...}` protocol events (drawn as curves) left out.
 */
export function cleanLog(text: string): string {
  const out: string[] = [];
  for (const raw of text.replace(ANSI, '').split('\n')) {
    const marker = raw.indexOf('@tfk8s {');
    const line = asTerminal(marker >= 0 ? raw.slice(0, marker) : raw);
    if (marker >= 0 && !line.trim()) {
      continue;
    }
    out.push(marker >= 0 ? line.trimEnd() : line);
  }
  return out.join('\n');
}

/**
 * One line as a terminal leaves it: a carriage return goes back to the line's start (what follows
 * overwrites what was there), a backspace erases the character before. Keras redraws its progress bar
 * with both, many times in one line.
 */
function asTerminal(raw: string): string {
  const cells: string[] = [];
  let at = 0;
  for (const ch of raw) {
    if (ch === '\r') {
      at = 0;
    } else if (ch === '\b') {
      if (at > 0) {
        cells.splice(at - 1, 1);
        at -= 1;
      }
    } else {
      cells[at] = ch;
      at += 1;
    }
  }
  return cells.join('');
}

/** The note on a live panel whose kernel restarted or died. */
export function staleNote(jobName: string): string {
  const attach = jobName ? `%tfk8s_attach ${jobName}` : '%tfk8s_attach NAME';
  return `The kernel restarted: this panel no longer updates and shows the last known state; ${attach} follows the job again.`;
}

const SIGNALS: { [n: number]: string } = {
  2: 'SIGINT',
  9: 'SIGKILL',
  15: 'SIGTERM'
};

/**
 * A replica's exit as people read it: the code, or the signal that ended it (a negative code), and
 * "stopped" where the job's own teardown or Stop sent that signal.
 */
export function exitText(code: number | null, state: string): string {
  if (code === null) {
    return '';
  }
  if (code >= 0) {
    return String(code);
  }
  const signal = SIGNALS[-code] ?? `signal ${-code}`;
  return state === 'stopped' || state === 'succeeded' || state === 'removed'
    ? `stopped (${signal})`
    : signal;
}
