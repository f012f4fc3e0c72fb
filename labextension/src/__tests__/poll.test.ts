import { strict as assert } from 'node:assert';
import { afterEach, test } from 'node:test';

import { Refresher, visibleOnlyPoll } from '../poll';

const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms));

test('the panel poll makes no request while hidden and resumes when shown', async () => {
  let visible = false;
  let requests = 0;
  const poll = visibleOnlyPoll(
    'test',
    async () => {
      requests++;
    },
    20,
    () => visible
  );
  await sleep(300); // ~15 intervals while hidden
  assert.equal(requests, 0);

  visible = true;
  await poll.refresh();
  await sleep(300);
  assert.ok(requests >= 5, `expected polling while visible, got ${requests}`);

  visible = false;
  await sleep(60); // let an in-flight tick settle
  const before = requests;
  await sleep(300);
  assert.equal(requests, before);
  poll.dispose();
});

test('the poll backs off after failures', async () => {
  let calls = 0;
  const poll = visibleOnlyPoll(
    'failing',
    async () => {
      calls++;
      throw new Error('server down');
    },
    20,
    () => true
  );
  await sleep(400);
  poll.dispose();
  // Without backoff 400 ms / 20 ms would make ~20 calls; backoff grows the interval.
  assert.ok(calls >= 2 && calls < 12, `calls=${calls}`);
});

const refreshers: Refresher<string>[] = [];
afterEach(() => {
  // A failed assertion must not leave a poll running (it would keep the test process alive).
  refreshers.splice(0).forEach(r => r.dispose());
});

/** A refresher over a scripted server: each fetch takes the next answer (a model or an Error). */
function scripted(answers: (string | Error)[], visible = () => true) {
  const seen = { fetches: 0, rendered: [] as string[], errors: [] as string[] };
  const refresher = new Refresher<string>({
    name: 'scripted',
    intervalMs: 60 * 1000, // only refresh() asks, after the first automatic fetch
    isVisible: visible,
    fetch: async () => {
      const answer = answers[seen.fetches++] ?? new Error('script exhausted');
      if (answer instanceof Error) {
        throw answer;
      }
      return answer;
    },
    render: model => seen.rendered.push(model),
    showError: message => seen.errors.push(message)
  });
  refreshers.push(refresher);
  return { refresher, seen };
}

test('a refresher renders each model and resolves refresh() once it is shown', async () => {
  const { refresher, seen } = scripted(['a', 'b']);
  assert.equal(refresher.model, null);
  await sleep(50); // the first fetch starts by itself
  assert.deepEqual(seen.rendered, ['a']);
  await refresher.refresh();
  assert.deepEqual(seen.rendered, ['a', 'b']);
  assert.equal(refresher.model, 'b');
});

test('a refresher shows an error once per distinct message and keeps the last model', async () => {
  const down = () => new Error('server down');
  const { refresher, seen } = scripted([
    'a',
    down(),
    down(),
    new Error('403 Forbidden'),
    'b',
    down()
  ]);
  await sleep(50);
  for (let i = 0; i < 5; i++) {
    await refresher.refresh();
  }
  assert.deepEqual(seen.rendered, ['a', 'b']);
  // The repeated "server down" is shown once; after a success it is news again.
  assert.deepEqual(seen.errors, [
    'server down',
    '403 Forbidden',
    'server down'
  ]);
  assert.equal(refresher.model, 'b');
});

test('a hidden refresher fetches nothing, even when asked', async () => {
  let visible = false;
  const { refresher, seen } = scripted(['a'], () => visible);
  await sleep(50);
  await refresher.refresh();
  assert.equal(seen.fetches, 0);
  visible = true;
  await refresher.refresh();
  assert.deepEqual(seen.rendered, ['a']);
});

test('a refresher changes its interval only when it differs', () => {
  const { refresher } = scripted([]);
  assert.equal(refresher.interval, 60 * 1000);
  refresher.interval = 2000;
  assert.equal(refresher.interval, 2000);
});
