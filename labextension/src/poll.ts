/**
 * Polling policy shared by the side panel and the job view: a Lumino `Poll` with backoff that stands
 * by (makes no request at all) while its widget is hidden or the browser tab is in the background.
 */
import { Poll } from '@lumino/polling';

/** Longest wait between two requests while the server keeps failing. */
const MAX_BACKOFF_MS = 60 * 1000;

/** A visible-only poll calling `factory` every `intervalMs`, backing off while it fails. */
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
    frequency: { interval: intervalMs, backoff: true, max: MAX_BACKOFF_MS },
    standby: () => !isVisible() || 'when-hidden'
  });
}

/**
 * Fetch a model, render it, show what went wrong: on a visible-only poll, and on demand.
 *
 * A failed fetch leaves the last rendered model in place, shows its error once (not again while the
 * same message repeats) and makes the poll back off; the next success renders and forgets the error.
 */
export class Refresher<T> {
  constructor(options: Refresher.IOptions<T>) {
    this._options = options;
    this._poll = visibleOnlyPoll(
      options.name,
      () => this._tick(),
      options.intervalMs,
      options.isVisible
    );
  }

  /** The latest model fetched (null before the first success). */
  get model(): T | null {
    return this._model;
  }

  /** The interval between two requests while they succeed, in milliseconds. */
  get interval(): number {
    return this._poll.frequency.interval;
  }

  set interval(ms: number) {
    if (ms !== this._poll.frequency.interval) {
      this._poll.frequency = { ...this._poll.frequency, interval: ms };
    }
  }

  /** Fetch now and resolve once the answer is rendered (or its error shown). */
  async refresh(): Promise<void> {
    await this._poll.refresh();
    await this._poll.tick;
  }

  /** Fetch soon, without waiting for the answer. */
  schedule(): void {
    void this._poll.refresh();
  }

  dispose(): void {
    // Stop first: `Poll.dispose()` alone leaves the next tick's timer pending (a no-op, but a live
    // timer keeps Node, and the tests, running until it fires).
    void this._poll.stop();
    this._poll.dispose();
  }

  private async _tick(): Promise<void> {
    let model: T;
    try {
      model = await this._options.fetch();
    } catch (error) {
      const message = (error as Error).message;
      if (message !== this._lastError) {
        this._lastError = message;
        this._options.showError(message);
      }
      throw error; // the poll backs off
    }
    this._lastError = null;
    this._model = model;
    this._options.render(model);
  }

  private _options: Refresher.IOptions<T>;
  private _poll: Poll;
  private _model: T | null = null;
  private _lastError: string | null = null;
}

export namespace Refresher {
  export interface IOptions<T> {
    /** Name of the poll (shows in Lumino's debugging output). */
    name: string;
    /** Interval between two requests while they succeed, in milliseconds. */
    intervalMs: number;
    /** False while the view is hidden: no request is made then. */
    isVisible: () => boolean;
    /** Ask the server; throw with a one-sentence message on failure. */
    fetch: () => Promise<T>;
    /** Show a model just fetched. */
    render: (model: T) => void;
    /** Show why the last fetch failed (called once per distinct message). */
    showError: (message: string) => void;
  }
}
