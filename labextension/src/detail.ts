import { Dialog, showDialog, showErrorMessage } from '@jupyterlab/apputils';
import { Message } from '@lumino/messaging';
import { Poll } from '@lumino/polling';
import { Widget } from '@lumino/widgets';

import {
  ageSince,
  cleanLog,
  formatCounts,
  formatMetric,
  pickSeries,
  preferredMetric,
  strategyLabel
} from './format';
import { IJobDetail, ILogsResponse } from './model';
import { phaseChip } from './panel';
import { visibleOnlyPoll } from './poll';
import { jobPath, requestAPI } from './request';
import { curveSvg } from './svg';

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className = '',
  text = ''
): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (className) {
    e.className = className;
  }
  if (text) {
    e.textContent = text;
  }
  return e;
}

/** One job in the main area: replicas, a larger curve, a log viewer following the tail, Stop, Delete. */
export class JobDetailView extends Widget {
  constructor(options: JobDetailView.IOptions) {
    super();
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
    this._delete = el(
      'button',
      'jp-Button jp-mod-styled tfk8s-delete',
      'Delete'
    );
    this._delete.onclick = () => void this.deleteJob();
    actions.append(this._stop, this._delete);
    this._message = el('div', 'tfk8s-detail-message');
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

    const logBar = el('div', 'tfk8s-log-bar');
    this._replicaSelect = el('select', 'tfk8s-replica-select');
    this._replicaSelect.onchange = () => {
      this._logReplica = this._replicaSelect.value;
      this._followTail = true;
      void this._poll.refresh();
    };
    logBar.append(el('span', '', 'Log of '), this._replicaSelect);
    this._logView = el('pre', 'tfk8s-log-view');
    this._logView.onscroll = () => {
      const v = this._logView;
      this._followTail = v.scrollTop + v.clientHeight >= v.scrollHeight - 4;
    };

    this.node.append(
      this._header,
      actions,
      this._message,
      el('h3', '', 'Replicas'),
      this._replicas,
      el('h3', '', 'Metrics'),
      curveBox,
      el('h3', '', 'Logs'),
      logBar,
      this._logView
    );
    this._poll = visibleOnlyPoll(
      `tfk8s:job:${options.name}`,
      () => this._fetch(),
      2000,
      () => this.isVisible
    );
  }

  readonly jobName: string;

  /** The latest detail (null before the first answer). */
  get job(): IJobDetail | null {
    return this._job;
  }

  dispose(): void {
    this._poll.dispose();
    super.dispose();
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    void this._poll.refresh();
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
    await this._poll.refresh();
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
    this._poll.dispose();
    (this.parent ?? this).dispose();
  }

  private _path(...rest: string[]): string {
    const path = jobPath(this.jobName, ...rest);
    return this._backend
      ? `${path}?backend=${encodeURIComponent(this._backend)}`
      : path;
  }

  private async _fetch(): Promise<void> {
    try {
      this._job = await requestAPI<IJobDetail>(this._path());
      const replica =
        this._logReplica ??
        (this._job.spec.reporting_replica as string | undefined) ??
        '';
      const params = new URLSearchParams({ tail: String(this._tail) });
      if (replica) {
        params.set('replica', replica);
      }
      if (this._backend) {
        params.set('backend', this._backend);
      }
      this._logs = await requestAPI<ILogsResponse>(
        `${jobPath(this.jobName, 'logs')}?${params}`
      );
      this._logReplica = this._logs.replica;
      this._lastError = null;
      // A finished job changes no more (unless restarted elsewhere): look less often.
      const interval = this._job.done ? 10000 : 2000;
      if (this._poll.frequency.interval !== interval) {
        this._poll.frequency = { ...this._poll.frequency, interval };
      }
    } catch (error) {
      const message = (error as Error).message;
      if (message !== this._lastError) {
        this._lastError = message;
        this._message.textContent = message;
        this._message.classList.add('tfk8s-error');
      }
      throw error;
    }
    this._render();
  }

  private _render(): void {
    const job = this._job;
    if (!job) {
      return;
    }
    this.title.label = `${job.name} (${job.phase})`;
    const header = this._header;
    header.replaceChildren(
      el('span', 'tfk8s-detail-name', job.name),
      phaseChip(job.phase),
      el(
        'span',
        'tfk8s-detail-meta',
        `${job.backend}${job.flavor ? ` (${job.flavor})` : ''} · ${strategyLabel(job.strategy)} · ${formatCounts(job.counts)} · started ${ageSince(job.created)} ago`
      )
    );
    this._stop.disabled = job.done;
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
        r.exit_code !== null ? String(r.exit_code) : '',
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
    this._metric.replaceChildren(
      ...names.sort().map(n => {
        const o = el('option', '', n);
        o.value = n;
        o.selected = n === current;
        return o;
      })
    );
    this._renderCurve();

    if (this._logs) {
      const options = this._logs.replicas.map(n => {
        const o = el('option', '', n);
        o.value = n;
        o.selected = n === this._logs!.replica;
        return o;
      });
      this._replicaSelect.replaceChildren(...options);
      this._logView.textContent =
        cleanLog(this._logs.text) || '(no output yet)';
      if (this._followTail) {
        this._logView.scrollTop = this._logView.scrollHeight;
      }
    }
  }

  private _renderCurve(): void {
    const job = this._job;
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
      this._log.checked
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
  private _job: IJobDetail | null = null;
  private _logs: ILogsResponse | null = null;
  private _logReplica: string | undefined;
  private _followTail = true;
  private _lastError: string | null = null;
  private _poll: Poll;
  private _header: HTMLDivElement;
  private _stop: HTMLButtonElement;
  private _delete: HTMLButtonElement;
  private _message: HTMLDivElement;
  private _replicas: HTMLTableElement;
  private _metric: HTMLSelectElement;
  private _log: HTMLInputElement;
  private _curve: HTMLDivElement;
  private _replicaSelect: HTMLSelectElement;
  private _logView: HTMLPreElement;
}

export namespace JobDetailView {
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
