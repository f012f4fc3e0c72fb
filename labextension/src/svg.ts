import { svgEl } from './dom';
import { scalePoints, sparklinePoints } from './format';
import type { IResizeMark } from './resize';

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
  logY = false,
  marks: readonly IResizeMark[] = []
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
    // Resizes that restarted the job: a dashed vertical line where the new shape took over.
    const shown = xs.filter(v => Number.isFinite(v));
    const [x0, x1] = [Math.min(...shown), Math.max(...shown)];
    for (const mark of marks) {
      if (x1 <= x0 || mark.x < x0 || mark.x > x1) {
        continue;
      }
      const x =
        Math.round((24 + ((mark.x - x0) / (x1 - x0)) * (width - 48)) * 10) / 10;
      const line = svgEl('line', {
        x1: x,
        x2: x,
        y1: 24,
        y2: height - 24,
        class: 'tfk8s-curve-resize'
      });
      line.dataset.x = String(mark.x);
      svg.appendChild(line);
      const nearEnd = x > width - 60; // keep the label inside the picture
      const t = svgEl('text', {
        x: nearEnd ? x - 3 : x + 3,
        y: 20,
        'text-anchor': nearEnd ? 'end' : 'start'
      });
      t.textContent = mark.label;
      svg.appendChild(t);
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
