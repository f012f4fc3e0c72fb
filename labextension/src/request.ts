import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { IErrorResponse } from './model';

/**
 * Call the jobs API under `<base>/tfk8s/api/jobs/<endPoint>`.
 *
 * @throws ServerConnection.ResponseError carrying the server's one-sentence message.
 */
export function requestAPI<T>(
  endPoint = '',
  init: RequestInit = {}
): Promise<T> {
  return requestTfk8s<T>(['jobs', endPoint], init);
}

/**
 * Call the extension's REST API under `<base>/tfk8s/api/<parts...>`; every request of the extension
 * goes here (`requestAPI` for the jobs, `['check']` for the cluster preflight).
 *
 * @throws ServerConnection.ResponseError carrying the server's one-sentence message.
 */
export async function requestTfk8s<T>(
  parts: string[],
  init: RequestInit = {}
): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'tfk8s', 'api', ...parts);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new ServerConnection.NetworkError(error as TypeError);
  }
  const text = await response.text();
  let data: unknown = text;
  if (text.length > 0) {
    try {
      data = JSON.parse(text);
    } catch {
      // Not JSON (a proxy's error page): keep the text as the message.
    }
  }
  if (!response.ok) {
    const message =
      errorMessage(data) || `${response.status} ${response.statusText}`;
    throw new ServerConnection.ResponseError(response, message);
  }
  return data as T;
}

/** The `message` of an error body (`IErrorResponse`), or '' when the body is not one. */
function errorMessage(data: unknown): string {
  if (data && typeof data === 'object' && 'message' in data) {
    const message = (data as Partial<IErrorResponse>).message;
    return typeof message === 'string' ? message : '';
  }
  return '';
}

/** The path of one job's endpoint, e.g. `jobPath('mnist', 'logs')` → `mnist/logs`. */
export function jobPath(name: string, ...rest: string[]): string {
  return [encodeURIComponent(name), ...rest].join('/');
}
