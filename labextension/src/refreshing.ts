import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import { Refresher } from './poll';

/**
 * A widget that shows one server model, refreshed while it is visible (see `Refresher` for the polling,
 * backoff and error rules). Subclasses say how to fetch the model, how to render it and where an error
 * goes; they ask for an early refresh after an action of their own.
 */
export abstract class RefreshingWidget<T> extends Widget {
  constructor(options: RefreshingWidget.IOptions) {
    super();
    this._refresher = new Refresher<T>({
      name: options.pollName,
      intervalMs: options.intervalMs,
      isVisible: () => this.isVisible,
      fetch: () => this.fetch(),
      render: model => this.render(model),
      showError: message => this.showError(message)
    });
  }

  /** The latest model fetched (null before the first answer). */
  get model(): T | null {
    return this._refresher.model;
  }

  /** Ask the server now; resolves once the answer is rendered (or its error shown). */
  async refresh(): Promise<void> {
    await this._refresher.refresh();
  }

  /** Change the refresh interval (milliseconds). */
  setInterval(ms: number): void {
    this._refresher.interval = ms;
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._refresher.dispose();
    super.dispose();
  }

  /** Ask the server soon, without waiting for the answer. */
  protected scheduleRefresh(): void {
    this._refresher.schedule();
  }

  /** The model from the server (throws with a one-sentence message on failure). */
  protected abstract fetch(): Promise<T>;

  /** Show a model just fetched. */
  protected abstract render(model: T): void;

  /** Show why the last fetch failed; called once per distinct message. */
  protected abstract showError(message: string): void;

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this.scheduleRefresh();
  }

  private _refresher: Refresher<T>;
}

export namespace RefreshingWidget {
  export interface IOptions {
    /** Name of the poll. */
    pollName: string;
    /** Refresh interval in milliseconds while requests succeed. */
    intervalMs: number;
  }
}
