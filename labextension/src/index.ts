import {
  ILabShell,
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import {
  CommandToolbarButton,
  ICommandPalette,
  MainAreaWidget,
  WidgetTracker,
  showErrorMessage
} from '@jupyterlab/apputils';
import { CodeCell } from '@jupyterlab/cells';
import { DocumentRegistry } from '@jupyterlab/docregistry';
import {
  INotebookModel,
  INotebookTracker,
  NotebookPanel
} from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { DisposableDelegate, IDisposable } from '@lumino/disposable';

import { JobDetailView } from './detail';
import { tfJobsIcon, trainCellIcon } from './icons';
import { ITrainOptions } from './model';
import { JobsPanel } from './panel';
import { hideUndrawnPanels, markStalePanels } from './stale';
import { askTrainOptions, trainCell } from './train';

const PLUGIN_ID = 'tfk8s-jupyter:plugin';

export namespace CommandIDs {
  export const trainCell = 'tfk8s:train-cell';
  export const openJob = 'tfk8s:open-job';
  export const showJobs = 'tfk8s:show-jobs';
}

interface ISettings {
  refreshInterval: number;
  logTailLines: number;
  defaults: ITrainOptions;
}

const DEFAULTS: ISettings = {
  refreshInterval: 5,
  logTailLines: 400,
  defaults: { strategy: 'auto', ps: 0, workers: 2, gpus: 0, backend: 'local' }
};

function readSettings(s: ISettingRegistry.ISettings | null): ISettings {
  if (!s) {
    return DEFAULTS;
  }
  const get = <T>(k: string, d: T) => (s.get(k).composite as T) ?? d;
  return {
    refreshInterval: get('refreshInterval', DEFAULTS.refreshInterval),
    logTailLines: get('logTailLines', DEFAULTS.logTailLines),
    defaults: {
      strategy: get('defaultStrategy', DEFAULTS.defaults.strategy),
      ps: get('defaultPs', DEFAULTS.defaults.ps),
      workers: get('defaultWorkers', DEFAULTS.defaults.workers),
      gpus: get('defaultGpus', DEFAULTS.defaults.gpus),
      backend: get('defaultBackend', DEFAULTS.defaults.backend)
    }
  };
}

/** Adds the "Train this cell on the cluster" button to every notebook's toolbar. */
class TrainButtonExtension implements DocumentRegistry.IWidgetExtension<
  NotebookPanel,
  INotebookModel
> {
  constructor(private _app: JupyterFrontEnd) {}

  createNew(panel: NotebookPanel): IDisposable {
    const button = new CommandToolbarButton({
      commands: this._app.commands,
      id: CommandIDs.trainCell,
      label: ''
    });
    button.addClass('tfk8s-train-button');
    panel.toolbar.insertAfter('cellType', 'tfk8s-train', button);
    return new DisposableDelegate(() => button.dispose());
  }
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description:
    'TF Jobs side panel and "Train this cell on the cluster" for tfk8s-jupyter.',
  autoStart: true,
  requires: [ILabShell],
  optional: [
    ISettingRegistry,
    ICommandPalette,
    INotebookTracker,
    ILayoutRestorer
  ],
  activate: async (
    app: JupyterFrontEnd,
    shell: ILabShell,
    registry: ISettingRegistry | null,
    palette: ICommandPalette | null,
    notebooks: INotebookTracker | null,
    restorer: ILayoutRestorer | null
  ) => {
    let settings = DEFAULTS;
    let loaded: ISettingRegistry.ISettings | null = null;
    if (registry) {
      try {
        loaded = await registry.load(PLUGIN_ID);
        settings = readSettings(loaded);
      } catch (error) {
        console.warn('tfk8s-jupyter: settings could not be loaded', error);
      }
    }

    const tracker = new WidgetTracker<MainAreaWidget<JobDetailView>>({
      namespace: 'tfk8s-job'
    });
    const openJob = (name: string, backend?: string) => {
      const existing = tracker.find(w => w.content.jobName === name);
      if (existing) {
        shell.activateById(existing.id);
        return existing;
      }
      const content = new JobDetailView({
        name,
        backend,
        tailLines: settings.logTailLines,
        onChange: () => void panel.refresh()
      });
      const widget = new MainAreaWidget({ content });
      widget.id = `tfk8s-job-${name}`;
      widget.title.icon = tfJobsIcon;
      void tracker.add(widget);
      shell.add(widget, 'main');
      shell.activateById(widget.id);
      return widget;
    };

    const panel = new JobsPanel({
      intervalMs: settings.refreshInterval * 1000,
      onOpen: job => openJob(job.name, job.backend)
    });
    panel.title.icon = tfJobsIcon;
    panel.title.caption = 'TF Jobs';
    shell.add(panel, 'left', { rank: 600 });
    if (restorer) {
      restorer.add(panel, 'tfk8s-jobs-panel');
      void restorer.restore(tracker, {
        command: CommandIDs.openJob,
        args: w => ({ name: w.content.jobName }),
        name: w => w.content.jobName
      });
    }
    loaded?.changed.connect(() => {
      settings = readSettings(loaded);
      panel.setInterval(settings.refreshInterval * 1000);
    });

    app.commands.addCommand(CommandIDs.openJob, {
      label: args => `Open TF job ${args.name as string}`,
      execute: args =>
        openJob(args.name as string, args.backend as string | undefined)
    });
    app.commands.addCommand(CommandIDs.showJobs, {
      label: 'Show TF Jobs',
      icon: tfJobsIcon,
      execute: () => shell.activateById(panel.id)
    });

    /** Cells whose Train is in progress (dialog open or submission under way). */
    const training = new Set<string>();
    const currentCodeCell = (): [NotebookPanel, CodeCell] | null => {
      const nb = notebooks?.currentWidget;
      const cell = nb?.content.activeCell;
      if (!nb || !cell || !(cell instanceof CodeCell)) {
        return null;
      }
      return [nb, cell];
    };
    app.commands.addCommand(CommandIDs.trainCell, {
      label: 'Train this cell on the cluster',
      caption:
        'Run the active cell as a distributed TensorFlow job (%%tfk8s_train) with settings from a form',
      icon: trainCellIcon,
      isEnabled: () => currentCodeCell() !== null,
      execute: async () => {
        const found = currentCodeCell();
        if (!found) {
          await showErrorMessage(
            'Train this cell on the cluster',
            'Select a code cell of a notebook first.'
          );
          return;
        }
        const [nb, cell] = found;
        // One launch per intent: a second click while this cell's dialog is open or its submission
        // is under way does nothing.
        if (training.has(cell.model.id)) {
          return;
        }
        training.add(cell.model.id);
        try {
          // The kernel-side configuration (TFK8s) is what the magics use: the dialog starts there.
          const options = await askTrainOptions(
            panel.model?.defaults ?? settings.defaults,
            panel.model?.backends ?? ['local']
          );
          if (!options) {
            return;
          }
          try {
            await trainCell(nb, cell, options);
          } catch (error) {
            await showErrorMessage(
              'Train this cell on the cluster',
              (error as Error).message
            );
            return;
          }
        } finally {
          training.delete(cell.model.id);
        }
        await panel.refresh();
      }
    });
    // A kernel that restarts or dies leaves its live panels behind, frozen: say so on each of them.
    notebooks?.widgetAdded.connect((_, nb) => {
      const mark = () => markStalePanels(nb.content.node);
      nb.sessionContext.statusChanged.connect((_, status) => {
        if (
          status === 'restarting' ||
          status === 'autorestarting' ||
          status === 'dead'
        ) {
          mark();
        }
      });
      nb.sessionContext.kernelChanged.connect(mark);
      // A reopened notebook's panels that no kernel draws: their saved static face stands alone.
      let pending = 0;
      const observer = new MutationObserver(() => {
        window.clearTimeout(pending);
        pending = window.setTimeout(
          () => hideUndrawnPanels(nb.content.node),
          50
        );
      });
      observer.observe(nb.content.node, {
        childList: true,
        subtree: true,
        characterData: true
      });
      nb.disposed.connect(() => {
        window.clearTimeout(pending);
        observer.disconnect();
      });
    });
    notebooks?.activeCellChanged.connect(() =>
      app.commands.notifyCommandChanged(CommandIDs.trainCell)
    );

    app.docRegistry.addWidgetExtension(
      'Notebook',
      new TrainButtonExtension(app)
    );
    app.contextMenu.addItem({
      command: CommandIDs.trainCell,
      selector: '.jp-Notebook .jp-CodeCell',
      rank: 20
    });
    if (palette) {
      palette.addItem({ command: CommandIDs.trainCell, category: 'TF Jobs' });
      palette.addItem({ command: CommandIDs.showJobs, category: 'TF Jobs' });
    }
  }
};

export default plugin;
