/**
 * The DOM building blocks of every view of the extension (side panel, job view, train form, SVG curves).
 * Only `document.createElement`/`createElementNS`: no framework, so the views stay plain Lumino widgets.
 */

const SVG_NS = 'http://www.w3.org/2000/svg';

/** A new `<tag>` with an optional class list (space-separated) and text. */
export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className = '',
  text = ''
): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (className) {
    e.className = className;
  }
  if (text) {
    e.textContent = text;
  }
  return e;
}

/** One `<option>` per value (label = value); the one equal to `selected` is selected. */
export function selectOptions(
  values: readonly string[],
  selected: string | null | undefined
): HTMLOptionElement[] {
  return values.map(v => {
    const o = el('option', '', v);
    o.value = v;
    o.selected = v === selected;
    return o;
  });
}

/** A new SVG `<tag>` with the given attributes. */
export function svgEl<K extends keyof SVGElementTagNameMap>(
  tag: K,
  attrs: { [name: string]: string | number }
): SVGElementTagNameMap[K] {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) {
    e.setAttribute(k, String(v));
  }
  return e;
}
