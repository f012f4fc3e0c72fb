import { el } from './dom';
import { ICheckReport } from './model';
import {
  checkHeadline,
  checkOptions,
  checkRowClass,
  checkingText
} from './preflight';
import { requestTfk8s } from './request';

/**
 * "Check cluster" in the side panel: the preflight of `%tfk8s_check` (`POST /tfk8s/api/check`) with a
 * context, namespace, image and GPU count, shown as the ✓/✗ table with one sentence per row. A cluster
 * that cannot be asked (unknown context, API server down) is the server's one sentence.
 */
export class ClusterCheckView {
  constructor() {
    this.node = el('details', 'tfk8s-check');
    const summary = el('summary', 'tfk8s-check-title', 'Check cluster');
    summary.title =
      'Would a job run on the Kubernetes cluster? The checks of %tfk8s_check: permissions, namespace, TFJob CRD, GPUs, quota, storage, image';
    const form = el('form', 'tfk8s-check-form');
    const field = (name: string, label: string, placeholder: string) => {
      const input = el('input', 'tfk8s-check-input');
      input.name = name;
      input.placeholder = placeholder;
      const row = el('label', 'tfk8s-check-field');
      row.append(el('span', '', label), input);
      form.append(row);
      return input;
    };
    this._context = field('context', 'Context', 'current context');
    this._namespace = field('namespace', 'Namespace', 'configured default');
    this._image = field('image', 'Image', 'not checked (runs a pod)');
    this._gpus = field('gpus', 'GPUs', 'configured default');
    this._gpus.inputMode = 'numeric';
    this._run = el(
      'button',
      'jp-Button jp-mod-styled tfk8s-check-run',
      'Check'
    );
    this._run.type = 'submit';
    form.append(this._run);
    form.onsubmit = event => {
      event.preventDefault();
      void this.check();
    };
    this._result = el('div', 'tfk8s-check-result');
    this.node.append(summary, form, this._result);
  }

  readonly node: HTMLDetailsElement;

  /** Run the preflight with the form's options and show its table (or the one sentence why not). */
  async check(): Promise<void> {
    const asked = checkOptions({
      context: this._context.value,
      namespace: this._namespace.value,
      image: this._image.value,
      gpus: this._gpus.value
    });
    if ('problem' in asked) {
      this._showError(asked.problem);
      return;
    }
    this._run.disabled = true;
    this._result.dataset.state = 'checking';
    this._result.replaceChildren(
      el('div', 'tfk8s-check-summary', checkingText(asked.options))
    );
    try {
      const report = await requestTfk8s<ICheckReport>(['check'], {
        method: 'POST',
        body: JSON.stringify(asked.options)
      });
      this._showReport(report);
    } catch (error) {
      this._showError((error as Error).message);
    } finally {
      this._run.disabled = false;
    }
  }

  private _showReport(report: ICheckReport): void {
    const table = el('table', 'tfk8s-check-table');
    for (const row of report.checks) {
      const tr = el('tr', checkRowClass(row));
      tr.dataset.check = row.name;
      tr.dataset.mark = row.mark;
      tr.append(
        el('td', 'tfk8s-check-mark', row.mark),
        el('td', 'tfk8s-check-name', row.name),
        el('td', 'tfk8s-check-message', row.message)
      );
      table.append(tr);
    }
    const summary = el(
      'div',
      `tfk8s-check-summary ${report.ok ? 'tfk8s-check-ready' : 'tfk8s-error'}`,
      checkHeadline(report)
    );
    this._result.dataset.state = report.ok ? 'ready' : 'problems';
    this._result.replaceChildren(summary, table);
  }

  private _showError(message: string): void {
    this._result.dataset.state = 'error';
    this._result.replaceChildren(
      el('div', 'tfk8s-check-error tfk8s-error', message)
    );
  }

  private _context: HTMLInputElement;
  private _namespace: HTMLInputElement;
  private _image: HTMLInputElement;
  private _gpus: HTMLInputElement;
  private _run: HTMLButtonElement;
  private _result: HTMLDivElement;
}
