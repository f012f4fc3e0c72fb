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
