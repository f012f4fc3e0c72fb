import { el } from './dom';
import { staleNote } from './format';

/**
 * Mark every live job panel (`.tfk8s-job-panel`, drawn by the kernel's widgets) under `root` as stale:
 * its kernel restarted or died, so it no longer updates. The last known state stays, the badge says it
 * is the last known one, Stop and the − / + worker controls are disabled and a note says how to follow the
 * job again.
 */
export function markStalePanels(root: HTMLElement): number {
  let marked = 0;
  root.querySelectorAll<HTMLElement>('.tfk8s-job-panel').forEach(panel => {
    if (panel.classList.contains('tfk8s-stale')) {
      return;
    }
    panel.classList.add('tfk8s-stale');
    const name = panel.dataset.tfk8sJob ?? jobNameOf(panel);
    const badge = panel.querySelector<HTMLElement>('.tfk8s-status-badge');
    if (badge && !badge.textContent?.startsWith('last known')) {
      badge.textContent = `last known: ${badge.textContent ?? ''}`;
    }
    panel
      .querySelectorAll<HTMLButtonElement>(
        'button.tfk8s-stop-button, .tfk8s-worker-controls button'
      )
      .forEach(b => {
        b.disabled = true;
        b.title = 'The kernel that drew this panel is gone';
      });
    panel.prepend(el('div', 'tfk8s-stale-note', staleNote(name)));
    marked += 1;
  });
  return marked;
}

function jobNameOf(panel: HTMLElement): string {
  return panel.querySelector('.tfk8s-job-title')?.textContent?.trim() ?? '';
}

/** What JupyterLab's widget renderer shows while it waits for a view it may never get to draw. */
const UNDRAWN_WIDGET = /^\s*(Loading widget\.\.\.|Error displaying widget)/;

/**
 * Hide a job panel's placeholder that no kernel will ever draw, where the notebook keeps the job's static
 * face beside it (`.tfk8s-summary` once the job ended, `.tfk8s-snapshot` while it ran). A notebook reopened
 * without the kernel that drew the panel would otherwise show "Loading widget..." above the summary for
 * good. Only a placeholder is hidden, and only while it is one: a panel that gets drawn shows again.
 * Returns how many placeholders are hidden under `root`.
 */
export function hideUndrawnPanels(root: HTMLElement): number {
  let hidden = 0;
  root.querySelectorAll<HTMLElement>('.jp-OutputArea').forEach(area => {
    const face = area.querySelector('.tfk8s-summary, .tfk8s-snapshot') !== null;
    area
      .querySelectorAll<HTMLElement>(':scope > .jp-OutputArea-child')
      .forEach(child => {
        const output = child.querySelector<HTMLElement>(
          '.jp-OutputArea-output'
        );
        const undrawn =
          face &&
          output !== null &&
          output.childElementCount === 0 &&
          UNDRAWN_WIDGET.test(output.textContent ?? '');
        child.classList.toggle('tfk8s-undrawn-panel', undrawn);
        hidden += undrawn ? 1 : 0;
      });
  });
  return hidden;
}
