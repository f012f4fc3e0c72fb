import { Dialog, showDialog, showErrorMessage } from '@jupyterlab/apputils';

import { el, selectOptions } from './dom';
import {
  ageSince,
  exitText,
  foldedLog,
  formatCounts,
  formatMetric,
  launchLabel,
  pickSeries,
  preferredMetric,
  strategyLabel
} from './format';
import { IJobDetail, ILogsResponse, ITensorBoardResponse } from './model';
import { phaseChip } from './panel';
import { RefreshingWidget } from './refreshing';
import { jobPath, requestAPI } from './request';
import { resizeControls, resizeMarks, resizingText } from './resize';
import { curveSvg } from './svg';

/** Refresh interval of a job that runs, and of one that is done (it changes no more). */
const RUNNING_INTERVAL_MS = 2000;
const DONE_INTERVAL_MS = 10000;

/** One job in the main area: replicas, a larger curve, a log viewer following the tail, Stop, Delete. */
export class JobDetailView extends RefreshingWidget<JobDetailView.IModel> {
  constructor(options: JobDetailView.IOptions) {
    super({
      pollName: `tfk8s:job:${options.name}`,
      intervalMs: RUNNING_INTERVAL_MS
    });
    this.jobName = options.name;
    this._backend = options.backend;
    this._onChange = options.onChange;
    this._tail = options.tailLines;
    this.addClass('tfk8s-JobDetail');
    this.id = `tfk8s-job-${options.name}`;
    this.title.label = options.name;
    this.title.caption = `TF job ${options.name}`;
    this.title.closable = true;

    this._header = el('div', 'tfk8s-detail-header');
    const actions = el('div', 'tfk8s-detail-actions');
    this._stop = el(
      'button',
      'jp-Button jp-mod-styled jp-mod-warn tfk8s-stop',
      'Stop'
    );
    this._stop.onclick = () => void this.stopJob();
    this._stop.disabled = true; // until the job is known to run (a restored tab may name a gone job)
    this._delete = el(
      'button',
      'jp-Button jp-mod-styled tfk8s-delete',
      'Delete'
    );
    this._delete.onclick = () => void this.deleteJob();
    this._tensorboard = el(
      'button',
      'jp-Button jp-mod-styled tfk8s-tensorboard',
      'TensorBoard'
    );
    this._tensorboard.onclick = () => void this.showTensorBoard();
    this._tensorboard.disabled = true; // until the job is known to have TensorBoard logs
    // −/+ workers: PATCH {"workers": N}; the server applies it or refuses with one sentence.
    const resize = el('span', 'tfk8s-resize');
    this._shrink = el(
      'button',
      'jp-Button jp-mod-styled tfk8s-workers-minus',
      '−'
    );
    this._shrink.title = 'One worker fewer';
    this._shrink.onclick = () => void this.scaleWorkers(-1);
    this._grow = el(
      'button',
      'jp-Button jp-mod-styled tfk8s-workers-plus',
      '+'
    );
    this._grow.title = 'One worker more';
    this._grow.onclick = () => void this.scaleWorkers(1);
    this._workers = el('span', 'tfk8s-workers-count', '');
    resize.append(
      el('span', 'tfk8s-resize-label', 'Workers'),
      this._shrink,
      this._workers,
      this._grow
    );
    this._shrink.disabled = this._grow.disabled = true; // until the job is known to run
    actions.append(this._stop, this._delete, this._tensorboard, resize);
    this._resizeMessage = el('div', 'tfk8s-resize-message');
    this._message = el('div', 'tfk8s-detail-message');
    this._notes = el('ul', 'tfk8s-detail-notes');
    this._replicas = el('table', 'tfk8s-lab-replicas');
    const curveBox = el('div', 'tfk8s-detail-curve');
    this._metric = el('select', 'tfk8s-metric-select');
    this._metric.onchange = () => this._renderCurve();
    this._log = el('input', 'tfk8s-logscale');
    this._log.type = 'checkbox';
    this._log.onchange = () => this._renderCurve();
    const logLabel = el('label', 'tfk8s-logscale-label');
    logLabel.append(this._log, document.createTextNode(' log scale'));
    const curveBar = el('div', 'tfk8s-curve-bar');
    curveBar.append(this._metric, logLabel);
    this._curve = el('div', 'tfk8s-curve-area');
    curveBox.append(curveBar, this._curve);
    this._tensorboardBox = el('div', 'tfk8s-detail-tensorboard');

    const logBar = el('div', 'tfk8s-log-bar');
    this._replicaSelect = el('select', 'tfk8s-replica-select');
    this._replicaSelect.onchange = () => {
      this._logReplica = this._replicaSelect.value;
      this._followTail = true;
      this.scheduleRefresh();
    };
    this._showAll = el('input', 'tfk8s-log-show-all');
    this._showAll.type = 'checkbox';
    this._showAll.onchange = () => this.scheduleRefresh();
    const showAllLabel = el('label', 'tfk8s-log-show-all-label');
    showAllLabel.title =
      "Also TensorFlow's start-up lines (absl, oneDNN, CUDA), folded by default";
    showAllLabel.append(this._showAll, document.createTextNode(' show all'));
    logBar.append(el('span', '', 'Log of '), this._replicaSelect, showAllLabel);
    this._logView = el('pre', 'tfk8s-log-view');
    this._logView.onscroll = () => {
      const v = this._logView;
      this._followTail = v.scrollTop + v.clientHeight >= v.scrollHeight - 4;
    };

    this.node.append(
      this._header,
      actions,
      this._resizeMessage,
      this._message,
      this._notes,
      el('h3', '', 'Replicas'),
      this._replicas,
      el('h3', '', 'Metrics'),
      curveBox,
      this._tensorboardBox,
      el('h3', '', 'Logs'),
      logBar,
      this._logView
    );
  }

  readonly jobName: string;

  /** The latest detail (null before the first answer). */
  get job(): IJobDetail | null {
    return this.model?.job ?? null;
  }

  /** Stop every replica of the job. */
  async stopJob(): Promise<void> {
    this._stop.disabled = true;
    try {
      await requestAPI(this._path('stop'), { method: 'POST' });
    } catch (error) {
      await showErrorMessage(
        `Stopping ${this.jobName} failed`,
        (error as Error).message
      );
    }
    this._onChange();
    await this.refresh();
  }

  /**
   * Resize the job by `delta` workers. The server answers with the job's detail once the resize is
   * applied, or refuses with one sentence, shown under the buttons as is.
   */
  async scaleWorkers(delta: number): Promise<void> {
    const controls = resizeControls(this.job, this._resizing);
    if (delta < 0 ? !controls.canShrink : !controls.canGrow) {
      return;
    }
    const to = controls.workers + delta;
    const before = this.job?.history?.length ?? 0;
    this._resizedFrom = before;
    this._resizing = true;
    this._updateResize();
    const message = this._resizeMessage;
    message.classList.remove('tfk8s-error');
    message.dataset.state = 'resizing';
    message.textContent = resizingText(controls.workers, to);
    try {
      const job = await requestAPI<IJobDetail>(this._path(), {
        method: 'PATCH',
        body: JSON.stringify({ workers: to })
      });
      // Applied (a live scale-down), or accepted (a restart with the new shape: the job's message says so).
      message.dataset.state = 'done';
      message.textContent =
        (job.history?.length ?? 0) > before ? '' : (job.message ?? '');
    } catch (error) {
      message.dataset.state = 'refused';
      message.textContent = (error as Error).message;
      message.classList.add('tfk8s-error');
    } finally {
      this._resizing = false;
    }
    this._updateResize();
    this._onChange();
    await this.refresh();
  }

  /** Start (or reuse) the job's TensorBoard on the server's machine and show it below the curve. */
  async showTensorBoard(): Promise<void> {
    this._tensorboardStarting = true;
    this._tensorboard.disabled = true;
    this._tensorboardBox.replaceChildren(
      el('div', 'tfk8s-curve-caption', 'Starting TensorBoard…')
    );
    try {
      const tb = await requestAPI<ITensorBoardResponse>(
        this._path('tensorboard'),
        { method: 'POST' }
      );
      const frame = el('iframe', 'tfk8s-tensorboard-frame');
      frame.src = tb.url;
      frame.title = `TensorBoard of ${this.jobName}`;
      const link = el('a', 'tfk8s-tensorboard-link', 'open in a new tab');
      link.href = tb.url;
      link.target = '_blank';
      link.rel = 'noopener';
      const caption = el(
        'div',
        'tfk8s-curve-caption',
        `TensorBoard of ${this.jobName} at ${tb.url} · `
      );
      caption.append(link);
      this._tensorboardBox.replaceChildren(caption, frame);
    } catch (error) {
      this._tensorboardBox.replaceChildren();
      await showErrorMessage(
        `TensorBoard of ${this.jobName} could not start`,
        (error as Error).message
      );
    } finally {
      this._tensorboardStarting = false;
      this._tensorboard.disabled = !this.job?.tensorboard;
    }
  }

  /** Ask for confirmation, then stop the job if needed and delete its record. */
  async deleteJob(): Promise<void> {
    const result = await showDialog({
      title: `Delete job ${this.jobName}?`,
      body: 'Its replicas are stopped and its record (metrics, logs) is removed. This cannot be undone.',
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Delete' })]
    });
    if (!result.button.accept) {
      return;
    }
    try {
      await requestAPI(this._path(), { method: 'DELETE' });
    } catch (error) {
      await showErrorMessage(
        `Deleting ${this.jobName} failed`,
        (error as Error).message
      );
      return;
    }
    this._onChange();
    (this.parent ?? this).dispose(); // disposes this view and its poll at once
  }

  private _path(...rest: string[]): string {
    const path = jobPath(this.jobName, ...rest);
    return this._backend
      ? `${path}?backend=${encodeURIComponent(this._backend)}`
      : path;
  }

  protected async fetch(): Promise<JobDetailView.IModel> {
    const job = await requestAPI<IJobDetail>(this._path());
    const replica = this._logReplica ?? job.spec.reporting_replica ?? '';
    const params = new URLSearchParams({ tail: String(this._tail) });
    if (replica) {
      params.set('replica', replica);
    }
    if (this._backend) {
      params.set('backend', this._backend);
    }
    const logs = await requestAPI<ILogsResponse>(
      `${jobPath(this.jobName, 'logs')}?${params}`
    );
    this._logReplica = logs.replica;
    return { job, logs };
  }

  protected showError(message: string): void {
    // A job that cannot be read (deleted, or its backend gone) cannot be stopped or resized from here.
    this._stop.disabled = true;
    this._shrink.disabled = this._grow.disabled = true;
    this._message.textContent = message;
    this._message.classList.add('tfk8s-error');
  }

  protected render({ job, logs }: JobDetailView.IModel): void {
    this.setInterval(job.done ? DONE_INTERVAL_MS : RUNNING_INTERVAL_MS);
    this.title.label = `${job.name} (${job.phase})`;
    const header = this._header;
    const launch = launchLabel(job.replicas);
    header.replaceChildren(
      el('span', 'tfk8s-detail-name', job.name),
      phaseChip(job.phase),
      el(
        'span',
        'tfk8s-detail-meta',
        `${job.backend}${job.flavor ? ` (${job.flavor})` : ''} · ${strategyLabel(job.strategy)} · ${formatCounts(job.counts)} · started ${ageSince(job.created)} ago`
      ),
      ...(launch ? [el('span', 'tfk8s-detail-launch', launch)] : [])
    );
    this._stop.disabled = job.done;
    this._updateResize();
    this._tensorboard.disabled = !job.tensorboard || this._tensorboardStarting;
    this._tensorboard.title = job.tensorboard
      ? 'Show TensorBoard for this job (a server on 127.0.0.1)'
      : 'This job has no TensorBoard logs yet (they appear once its fit starts)';
    const metrics = Object.entries(job.last_metrics)
      .map(([k, v]) => `${k} ${formatMetric(v)}`)
      .join('  ');
    this._message.classList.toggle('tfk8s-error', job.phase === 'failed');
    this._message.textContent = [
      job.error ?? job.message ?? '',
      job.epoch !== null ? `epoch ${job.epoch}` : '',
      job.step !== null ? `step ${job.step}` : '',
      metrics
    ]
      .filter(Boolean)
      .join(' · ');
    this._notes.replaceChildren(
      ...(job.notes ?? []).map(note => el('li', 'tfk8s-detail-note', note)),
      ...(job.history ?? []).map(h =>
        el(
          'li',
          'tfk8s-detail-resize',
          `resized ${h.from} → ${h.to} workers (${h.how}) ${ageSince(h.time)} ago`
        )
      )
    );

    const head = el('tr');
    for (const h of [
      'Replica',
      'State',
      'Restarts',
      'Host / pod',
      'PID',
      'Exit',
      'Age'
    ]) {
      head.append(el('th', '', h));
    }
    const rows = job.replicas.map(r => {
      const tr = el('tr', `tfk8s-replica-${r.state}`);
      tr.dataset.replica = r.name;
      tr.title = r.message ?? '';
      for (const v of [
        r.name,
        r.state,
        String(r.restarts),
        r.host ?? '',
        r.pid !== null ? String(r.pid) : '',
        exitText(r.exit_code, r.state),
        r.started ? ageSince(r.started) : ''
      ]) {
        tr.append(el('td', '', v));
      }
      return tr;
    });
    this._replicas.replaceChildren(head, ...rows);

    const names = Array.from(
      new Set([
        ...Object.keys(job.series.step),
        ...Object.keys(job.series.epoch)
      ])
    );
    const current = this._metric.value || preferredMetric(names) || '';
    this._metric.replaceChildren(...selectOptions(names.sort(), current));
    this._renderCurve();

    this._replicaSelect.replaceChildren(
      ...selectOptions(logs.replicas, logs.replica)
    );
    this._logView.textContent =
      foldedLog(logs.text, this._showAll.checked) || '(no output yet)';
    if (this._followTail) {
      this._logView.scrollTop = this._logView.scrollHeight;
    }
  }

  /** Enable −/+ as the latest detail and a resize in flight allow; show the live worker count. */
  private _updateResize(): void {
    const controls = resizeControls(this.job, this._resizing);
    const message = this._resizeMessage;
    if (
      message.dataset.state === 'done' &&
      (this.job?.history?.length ?? 0) > this._resizedFrom
    ) {
      // A restart-resize accepted earlier has now happened: the history line replaces the message.
      message.textContent = '';
    }
    this._workers.textContent = this.job ? String(controls.workers) : '';
    this._shrink.disabled = !controls.canShrink;
    this._grow.disabled = !controls.canGrow;
    const why = controls.reason;
    this._shrink.title =
      why ||
      (controls.canShrink
        ? 'One worker fewer'
        : 'A job needs at least one worker; Stop ends it.');
    this._grow.title = why || 'One worker more';
  }

  private _renderCurve(): void {
    const job = this.job;
    if (!job) {
      return;
    }
    const metric = this._metric.value;
    const picked = pickSeries(job.series, metric);
    if (!picked) {
      this._curve.replaceChildren(
        el('div', 'tfk8s-empty', 'No metrics reported yet.')
      );
      return;
    }
    const width = Math.max(320, Math.min(900, this._curve.clientWidth || 640));
    const svg = curveSvg(
      picked.xy.x,
      picked.xy.y,
      width,
      240,
      this._log.checked,
      resizeMarks(job.history, picked.kind)
    );
    svg.dataset.kind = picked.kind;
    this._curve.replaceChildren(
      svg,
      el('div', 'tfk8s-curve-caption', `${metric} per ${picked.kind}`)
    );
  }

  private _backend: string | undefined;
  private _onChange: () => void;
  private _tail: number;
  private _logReplica: string | undefined;
  private _followTail = true;
  private _header: HTMLDivElement;
  private _stop: HTMLButtonElement;
  private _delete: HTMLButtonElement;
  private _tensorboard: HTMLButtonElement;
  private _tensorboardBox: HTMLDivElement;
  private _tensorboardStarting = false;
  private _shrink: HTMLButtonElement;
  private _grow: HTMLButtonElement;
  private _workers: HTMLSpanElement;
  private _resizeMessage: HTMLDivElement;
  private _resizing = false;
  private _resizedFrom = 0;
  private _message: HTMLDivElement;
  private _notes: HTMLUListElement;
  private _replicas: HTMLTableElement;
  private _metric: HTMLSelectElement;
  private _log: HTMLInputElement;
  private _curve: HTMLDivElement;
  private _replicaSelect: HTMLSelectElement;
  private _logView: HTMLPreElement;
  private _showAll: HTMLInputElement;
}

export namespace JobDetailView {
  /** What one refresh fetches: the job, then the log of the replica shown. */
  export interface IModel {
    /** `GET /tfk8s/api/jobs/{name}`. */
    job: IJobDetail;
    /** `GET /tfk8s/api/jobs/{name}/logs` for the replica chosen (the reporting one at first). */
    logs: ILogsResponse;
  }

  export interface IOptions {
    /** Job name. */
    name: string;
    /** Backend the job runs on (searched in every backend when undefined). */
    backend?: string;
    /** Log lines shown. */
    tailLines: number;
    /** Called after Stop or Delete so the side panel refreshes. */
    onChange: () => void;
  }
}
