import { strict as assert } from 'node:assert';
import { test } from 'node:test';

import { visibleOnlyPoll } from '../poll';

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
