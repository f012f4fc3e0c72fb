import { Dialog, showDialog, showErrorMessage } from '@jupyterlab/apputils';
import { CodeCell } from '@jupyterlab/cells';
import { NotebookPanel } from '@jupyterlab/notebook';
import { Widget } from '@lumino/widgets';

import { el, selectOptions } from './dom';
import {
  LOAD_MAGICS,
  STRATEGIES,
  trainCellProblem,
  trainMagic,
  trainOptionsProblem
} from './format';
import { ITrainOptions } from './model';

/** The small form of "Train this cell on the cluster". */
export class TrainForm
  extends Widget
  implements Dialog.IBodyWidget<ITrainOptions>
{
  constructor(defaults: ITrainOptions, backends: string[]) {
    super();
    this.addClass('tfk8s-TrainForm');
    const row = (label: string, input: HTMLElement) => {
      const l = el('label', 'tfk8s-form-row');
      l.append(el('span', '', label), input);
      this.node.appendChild(l);
    };
    const select = (name: string, values: string[], value: string) => {
      const s = el('select', 'jp-mod-styled');
      s.name = name;
      s.append(...selectOptions(values, value));
      return s;
    };
    const number = (name: string, value: number, min: number) => {
      const i = el('input', 'jp-mod-styled');
      i.type = 'number';
      i.name = name;
      i.min = String(min);
      i.step = '1';
      i.value = String(value);
      return i;
    };
    const allBackends = Array.from(new Set([defaults.backend, ...backends]));
    this._strategy = select('strategy', STRATEGIES, defaults.strategy);
    this._ps = number('ps', defaults.ps, 0);
    this._workers = number('workers', defaults.workers, 1);
    this._gpus = number('gpus', defaults.gpus, 0);
    this._backend = select('backend', allBackends, defaults.backend);
    row('Strategy', this._strategy);
    row('Parameter servers', this._ps);
    row('Workers', this._workers);
    row('GPUs per worker', this._gpus);
    row('Backend', this._backend);
    // Keep the counts consistent with the strategy as the user switches it.
    this._strategy.onchange = () => {
      const s = this._strategy.value;
      if (s === 'parameter_server' && Number(this._ps.value) < 1) {
        this._ps.value = '1';
      } else if (s === 'multi_worker_mirrored' || s === 'mirrored') {
        this._ps.value = '0';
      }
      if (s === 'mirrored') {
        this._workers.value = '1';
      }
    };
  }

  getValue(): ITrainOptions {
    return {
      strategy: this._strategy.value,
      ps: Number(this._ps.value),
      workers: Number(this._workers.value),
      gpus: Number(this._gpus.value),
      backend: this._backend.value
    };
  }

  private _strategy: HTMLSelectElement;
  private _ps: HTMLInputElement;
  private _workers: HTMLInputElement;
  private _gpus: HTMLInputElement;
  private _backend: HTMLSelectElement;
}

/** Ask for the settings; null when cancelled or invalid (the problem is shown). */
export async function askTrainOptions(
  defaults: ITrainOptions,
  backends: string[]
): Promise<ITrainOptions | null> {
  const result = await showDialog({
    title: 'Train this cell on the cluster',
    body: new TrainForm(defaults, backends),
    buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Train' })],
    focusNodeSelector: 'select'
  });
  if (!result.button.accept || !result.value) {
    return null;
  }
  const problem = trainOptionsProblem(result.value);
  if (problem) {
    await showErrorMessage('These settings cannot train', problem);
    return null;
  }
  return result.value;
}

/**
 * Make `cell` a `%%tfk8s_train` cell with the chosen flags and run it through the notebook's own kernel,
 * as Shift+Enter would; its outputs (the live panel) go to the cell's output area.
 */
export async function trainCell(
  panel: NotebookPanel,
  cell: CodeCell,
  options: ITrainOptions
): Promise<void> {
  const source = cell.model.sharedModel.getSource();
  const problem = trainCellProblem(source);
  if (problem) {
    throw new Error(problem);
  }
  const context = panel.sessionContext;
  await context.ready;
  const kernel = context.session?.kernel;
  if (!kernel) {
    throw new Error(
      'The notebook has no kernel; start one (Kernel › Restart Kernel) and try again.'
    );
  }
  const reply = await kernel.requestExecute({
    code: LOAD_MAGICS,
    silent: true,
    store_history: false
  }).done;
  if (reply.content.status !== 'ok') {
    const c = reply.content as { ename?: string; evalue?: string };
    throw new Error(
      `The kernel could not load tfk8s_jupyter (${c.ename ?? 'error'}: ${c.evalue ?? ''}); install tfk8s-jupyter in the kernel's environment.`
    );
  }
  // The cell becomes a training cell: the magic goes on its first line, so what it shows, its prompt
  // and a later Shift+Enter (which trains again, or shows the job if it still runs) agree. Run as
  // Shift+Enter runs it (outputs trusted, execution count, cell id for the kernel).
  cell.model.trusted = true;
  cell.model.sharedModel.setSource(trainMagic(options, source));
  await CodeCell.execute(cell, context);
}
