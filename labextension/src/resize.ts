/**
 * The job view's −/+ worker controls, as pure logic (unit-tested under plain Node): how many workers a job
 * has now, which button may act, and what each says when it cannot.
 */
import type { IJobDetail, IReplica, IResize } from './model';

/** What the −/+ controls show for one job. */
export interface IResizeControls {
  /** Workers that have not been removed by a scale-down. */
  workers: number;
  /** The − button may act (asks for `workers - 1`). */
  canShrink: boolean;
  /** The + button may act (asks for `workers + 1`). */
  canGrow: boolean;
  /** Why both buttons are disabled, or '' when they are not. */
  reason: string;
}

/** Worker replicas that have not been removed (`state !== 'removed'`). */
export function liveWorkers(replicas: readonly IReplica[]): number {
  return replicas.filter(r => r.role === 'worker' && r.state !== 'removed')
    .length;
}

/**
 * The controls for `job`: both disabled while a resize is in flight or when the job is not running;
 * − also when one worker is left (a job needs one; Stop ends it). Anything else is for the server to
 * accept or refuse with its one sentence (scale-up and all-reduce resizes may not be supported).
 */
export function resizeControls(
  job: IJobDetail | null,
  inFlight: boolean
): IResizeControls {
  const workers = job ? liveWorkers(job.replicas) : 0;
  let reason = '';
  if (!job) {
    reason = 'The job is not loaded yet.';
  } else if (inFlight) {
    reason = 'A resize is in progress.';
  } else if (job.phase !== 'running') {
    reason = job.done
      ? `The job has ${job.phase}; only a running job can be resized.`
      : `The job is ${job.phase}; it can be resized once it runs.`;
  }
  return {
    workers,
    canShrink: !reason && workers > 1,
    canGrow: !reason,
    reason
  };
}

/** The line shown while a resize is on its way, e.g. `resizing 3 → 2 workers…`. */
export function resizingText(from: number, to: number): string {
  return `resizing ${from} → ${to} workers…`;
}

/** A vertical mark on the job view's curve where a resize restarted the job. */
export interface IResizeMark {
  /** Step (per-step curve) or epoch counted from 1 (per-epoch curve). */
  x: number;
  /** E.g. `2→3`. */
  label: string;
}

/**
 * Where each restart-resize sits on a curve of `kind`: at the step of the checkpoint the new shape
 * continued from (per step), or at the first epoch it trained (per epoch, counted from 1). A live
 * scale-down restarts nothing and is not marked.
 */
export function resizeMarks(
  history: readonly IResize[] | undefined,
  kind: 'step' | 'epoch'
): IResizeMark[] {
  const marks: IResizeMark[] = [];
  for (const h of history ?? []) {
    const at = kind === 'step' ? h.step : h.epoch;
    if (h.how !== 'restart' || typeof at !== 'number') {
      continue;
    }
    marks.push({
      x: kind === 'step' ? at : at + 1,
      label: `${h.from}→${h.to}`
    });
  }
  return marks;
}
