/**
 * The "Check cluster" form and table, as pure logic (unit-tested under plain Node): the options a form
 * sends, and how each preflight row is shown.
 */
import type { ICheckOptions, ICheckReport, ICheckRow } from './model';

/** The form's fields as typed (empty: the configured default). */
export interface ICheckFields {
  context: string;
  namespace: string;
  image: string;
  gpus: string;
}

/**
 * The options to send, or the one sentence saying which field is wrong (the server says the same).
 * Empty fields are left out, so the server uses the configured defaults (`c.TFK8s.*`).
 */
export function checkOptions(
  fields: ICheckFields
): { options: ICheckOptions } | { problem: string } {
  const options: ICheckOptions = {};
  for (const key of ['context', 'namespace', 'image'] as const) {
    const value = fields[key].trim();
    if (value) {
      options[key] = value;
    }
  }
  const gpus = fields.gpus.trim();
  if (gpus) {
    if (!/^\d+$/.test(gpus)) {
      return {
        problem: `gpus="${gpus}" is not a number of GPUs; give a whole number of at least 0, such as 1.`
      };
    }
    options.gpus = Number(gpus);
  }
  return { options };
}

/** The class of a row by its mark: `tfk8s-check-ok` (✓), `tfk8s-check-fail` (✗), `tfk8s-check-unknown` (–). */
export function checkRowClass(row: ICheckRow): string {
  if (!row.ok) {
    return 'tfk8s-check-fail';
  }
  return row.mark === '✓' ? 'tfk8s-check-ok' : 'tfk8s-check-unknown';
}

/** The line above the table: the server's summary, with the failed checks named when there are any. */
export function checkHeadline(report: ICheckReport): string {
  const failed = report.checks.filter(c => !c.ok).map(c => c.name);
  return failed.length
    ? `${report.summary} ✗ ${failed.join(', ')}`
    : report.summary;
}

/** What the Check button says while a check runs (an image check runs a pod: it takes a while). */
export function checkingText(options: ICheckOptions): string {
  return options.image
    ? `Checking the cluster and image ${options.image} (a one-off pod; up to a few minutes)…`
    : 'Checking the cluster…';
}
