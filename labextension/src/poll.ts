/**
 * Polling policy shared by the side panel and the job view: a Lumino `Poll` with backoff that stands
 * by (makes no request at all) while its widget is hidden or the browser tab is in the background.
 */
import { Poll } from '@lumino/polling';

/** Options of a visible-only poll calling `factory` every `intervalMs`. */
export function visibleOnlyPoll(
  name: string,
  factory: () => Promise<unknown>,
  intervalMs: number,
  isVisible: () => boolean
): Poll {
  return new Poll({
    name,
    factory,
    auto: true,
    frequency: { interval: intervalMs, backoff: true, max: 60 * 1000 },
    standby: () => !isVisible() || 'when-hidden'
  });
}
