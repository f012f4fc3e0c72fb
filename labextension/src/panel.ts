import { showErrorMessage } from '@jupyterlab/apputils';

import { ClusterCheckView } from './checkview';
import { el } from './dom';
import {
  ageSince,
  formatCounts,
  formatMetric,
  phaseClass,
  phaseLabel,
  strategyLabel
} from './format';
import { IJob, IJobsResponse } from './model';
import { RefreshingWidget } from './refreshing';
import { requestAPI } from './request';
import { sparklineSvg } from './svg';

/** A phase chip (`tfk8s-chip tfk8s-chip-<phase>`). */
export function phaseChip(phase: string): HTMLSpanElement {
  const chip = el('span', phaseClass(phase), phaseLabel(phase));
  chip.dataset.phase = phase;
  return chip;
}

/** The "TF Jobs" side panel: one row per job of the current user, refreshed while visible. */
export class JobsPanel extends RefreshingWidget<IJobsResponse> {
  constructor(options: JobsPanel.IOptions) {
    super({ pollName: 'tfk8s:jobs', intervalMs: options.intervalMs });
    this._onOpen = options.onOpen;
    this.id = 'tfk8s-jobs-panel';
    this.addClass('tfk8s-JobsPanel');

    const header = el('div', 'tfk8s-JobsPanel-header');
    header.appendChild(el('span', 'tfk8s-JobsPanel-title', 'TF Jobs'));
    const refresh = el('button', 'jp-Button tfk8s-refresh', '⟳');
    refresh.title = 'Refresh the jobs list';
    refresh.onclick = () => void this.refresh();
    header.appendChild(refresh);
    this._warnings = el('div', 'tfk8s-warnings');
    this._list = el('div', 'tfk8s-job-list');
    this._check = new ClusterCheckView();
    this.node.append(header, this._warnings, this._check.node, this._list);
  }

  protected fetch(): Promise<IJobsResponse> {
    return requestAPI<IJobsResponse>();
  }

  protected showError(message: string): void {
    void showErrorMessage(
      'TF Jobs: the jobs list could not be loaded',
      message
    );
  }

  protected render(data: IJobsResponse): void {
    this._warnings.replaceChildren(
      ...data.warnings.map(w => {
        const div = el('div', 'tfk8s-warning', `${w.backend}: ${w.message}`);
        div.dataset.backend = w.backend;
        return div;
      })
    );
    if (data.jobs.length === 0) {
      this._list.replaceChildren(
        el(
          'div',
          'tfk8s-empty',
          'No jobs yet. Run a cell with %%tfk8s_train, or use "Train this cell on the cluster" in a notebook.'
        )
      );
      return;
    }
    this._list.replaceChildren(...data.jobs.map(job => this._row(job)));
  }

  private _row(job: IJob): HTMLElement {
    const row = el('div', `tfk8s-job-row tfk8s-phase-${job.phase}`);
    row.dataset.job = job.name;
    row.dataset.phase = job.phase;
    row.title = job.message ?? `${job.name} on ${job.backend}`;
    row.onclick = () => this._onOpen(job);

    const top = el('div', 'tfk8s-row-top');
    top.append(el('span', 'tfk8s-job-name', job.name), phaseChip(job.phase));
    const meta = el('div', 'tfk8s-row-meta');
    meta.append(
      el('span', 'tfk8s-job-backend', job.backend),
      el('span', 'tfk8s-job-strategy', strategyLabel(job.strategy)),
      el('span', 'tfk8s-job-age', ageSince(job.created))
    );
    if (job.origin) {
      // which notebook and cell started the job
      meta.append(el('span', 'tfk8s-job-origin', job.origin));
    }
    const bottom = el('div', 'tfk8s-row-bottom');
    bottom.append(
      el(
        'span',
        'tfk8s-job-counts',
        formatCounts(job.counts) || `${job.replicas_total} replicas`
      )
    );
    const metric = job.sparkline.metric;
    if (metric) {
      bottom.append(
        el(
          'span',
          'tfk8s-job-metric',
          `${metric} ${formatMetric(job.last_metrics[metric])}`
        )
      );
    }
    bottom.append(sparklineSvg(job.sparkline.values));
    row.append(top, meta, bottom);
    return row;
  }

  private _list: HTMLDivElement;
  private _check: ClusterCheckView;
  private _warnings: HTMLDivElement;
  private _onOpen: (job: IJob) => void;
}

export namespace JobsPanel {
  export interface IOptions {
    /** Called when a row is clicked. */
    onOpen: (job: IJob) => void;
    /** Refresh interval in milliseconds. */
    intervalMs: number;
  }
}
