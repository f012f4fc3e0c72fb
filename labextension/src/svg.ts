import { svgEl } from './dom';
import { scalePoints, sparklinePoints } from './format';

/** An inline SVG sparkline (class `tfk8s-sparkline`), empty when there are no values. */
export function sparklineSvg(
  values: number[],
  width = 80,
  height = 22
): SVGSVGElement {
  const svg = svgEl('svg', {
    class: 'tfk8s-sparkline',
    width,
    height,
    viewBox: `0 0 ${width} ${height}`
  });
  svg.dataset.points = String(values.length);
  if (values.length > 0) {
    svg.appendChild(
      svgEl('polyline', {
        points: sparklinePoints(values, width, height),
        fill: 'none',
        'stroke-width': 1.5
      })
    );
  }
  return svg;
}

/** Series with at most this many points are drawn with a marker on every point. */
export const SPARSE_POINTS = 60;

/** A larger curve with min/max labels (class `tfk8s-lab-curve`). */
export function curveSvg(
  xs: number[],
  ys: number[],
  width: number,
  height: number,
  logY = false
): SVGSVGElement {
  const svg = svgEl('svg', {
    class: 'tfk8s-lab-curve',
    width,
    height,
    viewBox: `0 0 ${width} ${height}`
  });
  const pts = scalePoints(xs, ys, width, height, 24, logY);
  svg.dataset.points = String(pts.length);
  svg.appendChild(
    svgEl('rect', {
      x: 24,
      y: 24,
      width: width - 48,
      height: height - 48,
      class: 'tfk8s-curve-frame'
    })
  );
  if (pts.length > 0) {
    svg.appendChild(
      svgEl('polyline', {
        points: pts.map(([x, y]) => `${x},${y}`).join(' '),
        fill: 'none',
        'stroke-width': 2
      })
    );
    // A sparse series (a short job, or per epoch) shows its points, not only the lines between them.
    if (pts.length <= SPARSE_POINTS) {
      for (const [x, y] of pts) {
        svg.appendChild(
          svgEl('circle', { cx: x, cy: y, r: 3, class: 'tfk8s-curve-point' })
        );
      }
    }
    const finite = ys.filter(v => Number.isFinite(v));
    const label = (text: string, x: number, y: number, anchor: string) => {
      const t = svgEl('text', { x, y, 'text-anchor': anchor });
      t.textContent = text;
      svg.appendChild(t);
    };
    const fmt = (v: number) => String(Number(v.toPrecision(3)));
    label(fmt(Math.max(...finite)), 28, 38, 'start');
    label(fmt(Math.min(...finite)), 28, height - 30, 'start');
    label(`${xs[0]}`, 24, height - 8, 'start');
    label(`${xs[xs.length - 1]}`, width - 24, height - 8, 'end');
  }
  return svg;
}
