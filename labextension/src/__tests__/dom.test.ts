import { strict as assert } from 'node:assert';
import { before, test } from 'node:test';

import { el, selectOptions, svgEl } from '../dom';
import { curveSvg } from '../svg';

/** Just enough of an element for the helpers: what they set is recorded. */
class FakeElement {
  constructor(
    readonly tagName: string,
    readonly namespaceURI: string | null = null
  ) {}
  className = '';
  textContent: string | null = null;
  value = '';
  selected = false;
  attributes = new Map<string, string>();
  children: FakeElement[] = [];
  dataset: { [key: string]: string } = {};
  setAttribute(name: string, value: string): void {
    this.attributes.set(name, value);
  }
  appendChild(child: FakeElement): FakeElement {
    this.children.push(child);
    return child;
  }
}

before(() => {
  Object.assign(globalThis, {
    document: {
      createElement: (tag: string) => new FakeElement(tag),
      createElementNS: (ns: string, tag: string) => new FakeElement(tag, ns)
    }
  });
});

test('el sets the class list and the text it is given, nothing else', () => {
  const row = el('div', 'tfk8s-job-row tfk8s-phase-running', 'mnist');
  const fake = row as unknown as FakeElement;
  assert.equal(fake.tagName, 'div');
  assert.equal(fake.className, 'tfk8s-job-row tfk8s-phase-running');
  assert.equal(fake.textContent, 'mnist');

  const bare = el('tr') as unknown as FakeElement;
  assert.equal(bare.className, '');
  assert.equal(bare.textContent, null); // left untouched, not set to ''
});

test('selectOptions labels each option with its value and selects one', () => {
  const opts = selectOptions(['chief-0', 'worker-0', 'worker-1'], 'worker-0');
  assert.deepEqual(
    opts.map(o => [o.value, o.textContent, o.selected]),
    [
      ['chief-0', 'chief-0', false],
      ['worker-0', 'worker-0', true],
      ['worker-1', 'worker-1', false]
    ]
  );
  assert.ok(selectOptions(['loss'], null).every(o => !o.selected));
});

test('svgEl makes an SVG-namespaced element with string attributes', () => {
  const line = svgEl('polyline', {
    points: '0,1 2,3',
    'stroke-width': 1.5
  }) as unknown as FakeElement;
  assert.equal(line.tagName, 'polyline');
  assert.equal(line.namespaceURI, 'http://www.w3.org/2000/svg');
  assert.deepEqual(Object.fromEntries(line.attributes), {
    points: '0,1 2,3',
    'stroke-width': '1.5'
  });
});

test('a short series is drawn with a marker on every point, a long one as a line', () => {
  const points = (svg: SVGSVGElement) =>
    (svg as unknown as FakeElement).children.filter(
      c => c.tagName === 'circle'
    );
  const short = curveSvg([1, 20, 40], [0.9, 0.5, 0.3], 300, 150);
  assert.equal(points(short).length, 3);
  assert.ok(
    (short as unknown as FakeElement).children.some(
      c => c.tagName === 'polyline'
    )
  );
  const xs = Array.from({ length: 200 }, (_, i) => i + 1);
  const long = curveSvg(
    xs,
    xs.map(x => 1 / x),
    300,
    150
  );
  assert.equal(points(long).length, 0);
});

test('a resize mark is a vertical line where it happened, inside the curve only', () => {
  const lines = (svg: SVGSVGElement) =>
    (svg as unknown as FakeElement).children.filter(c => c.tagName === 'line');
  const xs = [0, 50, 100];
  const svg = curveSvg(xs, [3, 2, 1], 248, 150, false, [
    { x: 50, label: '2→3' },
    { x: 500, label: '3→4' }
  ]);
  const [line] = lines(svg);
  assert.equal(lines(svg).length, 1);
  assert.equal(line.attributes.get('x1'), '124'); // halfway between the 24-pixel margins
  assert.equal(line.dataset.x, '50');
  assert.equal(lines(curveSvg(xs, [3, 2, 1], 248, 150)).length, 0);
});
