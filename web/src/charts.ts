// Small SVG plots: bars with confidence intervals, lines, heat maps. No plotting library needed.

const NS = 'http://www.w3.org/2000/svg';

function svg(tag: string, attrs: Record<string, string | number>, text?: string): SVGElement {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

export interface Bar {
  label: string;
  value: number;
  lo?: number | null;
  hi?: number | null;
  color?: string;
}

/** Vertical bars with optional interval whiskers; `domain` fixes the y range. */
export function barChart(bars: Bar[], opts: { domain?: [number, number]; height?: number; format?: (v: number) => string } = {}): SVGSVGElement {
  const width = Math.max(320, bars.length * 56 + 60);
  const height = opts.height ?? 220;
  const pad = { l: 44, r: 10, t: 12, b: 48 };
  const values = bars.flatMap((b) => [b.value, b.lo ?? b.value, b.hi ?? b.value]).filter(Number.isFinite);
  const [y0, y1] = opts.domain ?? [Math.min(0, ...values), Math.max(1e-9, ...values)];
  const y = (v: number) => pad.t + (height - pad.t - pad.b) * (1 - (v - y0) / (y1 - y0 || 1));
  const root = svg('svg', { class: 'chart', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img' }) as SVGSVGElement;
  const fmt = opts.format ?? ((v: number) => v.toFixed(2));
  for (const t of [y0, (y0 + y1) / 2, y1]) {
    root.append(svg('line', { class: 'axis', x1: pad.l, x2: width - pad.r, y1: y(t), y2: y(t) }));
    root.append(svg('text', { x: pad.l - 4, y: y(t) + 4, 'text-anchor': 'end' }, fmt(t)));
  }
  const slot = (width - pad.l - pad.r) / Math.max(1, bars.length);
  bars.forEach((b, k) => {
    const x = pad.l + k * slot + slot * 0.2;
    const w = slot * 0.6;
    const top = y(Math.min(Math.max(b.value, y0), y1));
    const base = y(Math.min(Math.max(0, y0), y1));
    root.append(svg('rect', { class: 'bar', x, y: Math.min(top, base), width: w, height: Math.max(1, Math.abs(base - top)), ...(b.color ? { fill: b.color } : {}) }));
    if (b.lo != null && b.hi != null) {
      const cx = x + w / 2;
      root.append(svg('line', { class: 'ci', x1: cx, x2: cx, y1: y(b.lo), y2: y(b.hi) }));
      root.append(svg('line', { class: 'ci', x1: cx - 5, x2: cx + 5, y1: y(b.lo), y2: y(b.lo) }));
      root.append(svg('line', { class: 'ci', x1: cx - 5, x2: cx + 5, y1: y(b.hi), y2: y(b.hi) }));
    }
    root.append(svg('text', { x: x + w / 2, y: Math.min(top, base) - 4, 'text-anchor': 'middle' }, fmt(b.value)));
    root.append(svg('text', { x: x + w / 2, y: height - pad.b + 14, 'text-anchor': 'middle' }, b.label.length > 12 ? `${b.label.slice(0, 11)}…` : b.label));
  });
  return root;
}

export interface Series {
  name: string;
  color: string;
  points: [number, number][]; // [x (ms since epoch or index), y]
}

/** Lines over time (x in epoch milliseconds). */
export function lineChart(series: Series[], opts: { height?: number; yLabel?: string } = {}): SVGSVGElement {
  const width = 520;
  const height = opts.height ?? 220;
  const pad = { l: 44, r: 12, t: 12, b: 36 };
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = series.flatMap((s) => s.points.map((p) => p[1]));
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  const [y0, y1] = [Math.min(0, ...ys), Math.max(1, ...ys)];
  const x = (v: number) => pad.l + (width - pad.l - pad.r) * ((v - x0) / (x1 - x0 || 1));
  const y = (v: number) => pad.t + (height - pad.t - pad.b) * (1 - (v - y0) / (y1 - y0 || 1));
  const root = svg('svg', { class: 'chart', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img' }) as SVGSVGElement;
  root.append(svg('line', { class: 'axis', x1: pad.l, x2: width - pad.r, y1: y(y0), y2: y(y0) }));
  root.append(svg('text', { x: pad.l - 4, y: y(y1) + 4, 'text-anchor': 'end' }, String(Math.round(y1 * 100) / 100)));
  root.append(svg('text', { x: pad.l - 4, y: y(y0) + 4, 'text-anchor': 'end' }, String(y0)));
  if (xs.length) {
    const day = (v: number) => new Date(v).toLocaleString(undefined, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
    root.append(svg('text', { x: pad.l, y: height - 8 }, day(x0)));
    root.append(svg('text', { x: width - pad.r, y: height - 8, 'text-anchor': 'end' }, day(x1)));
  }
  series.forEach((s, k) => {
    if (!s.points.length) return;
    const d = s.points.map((p, i) => `${i ? 'L' : 'M'}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(' ');
    root.append(svg('path', { d, fill: 'none', stroke: s.color, 'stroke-width': 2 }));
    const [lx, ly] = s.points[s.points.length - 1];
    root.append(svg('circle', { cx: x(lx), cy: y(ly), r: 3, fill: s.color }));
    root.append(svg('text', { x: width - pad.r - 4, y: pad.t + 12 + 14 * k, 'text-anchor': 'end', fill: s.color }, s.name));
  });
  return root;
}

/** A heat map (confusion matrix): rows × columns of counts. */
export function heatmap(rows: string[], cols: string[], values: number[][], opts: { title?: string } = {}): SVGSVGElement {
  const cell = 34;
  const padL = 96;
  const padT = 64;
  const width = padL + cols.length * cell + 8;
  const height = padT + rows.length * cell + 8;
  const max = Math.max(1, ...values.flat());
  const root = svg('svg', { class: 'chart', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img' }) as SVGSVGElement;
  if (opts.title) root.append(svg('text', { x: 2, y: 12 }, opts.title));
  cols.forEach((c, j) => root.append(svg('text', { x: padL + j * cell + cell / 2, y: padT - 6, 'text-anchor': 'start', transform: `rotate(-40 ${padL + j * cell + cell / 2} ${padT - 6})` }, c.slice(0, 12))));
  rows.forEach((r, i) => {
    root.append(svg('text', { x: padL - 6, y: padT + i * cell + cell / 2 + 4, 'text-anchor': 'end' }, r.slice(0, 14)));
    cols.forEach((_c, j) => {
      const v = values[i]?.[j] ?? 0;
      const a = v / max;
      root.append(svg('rect', { x: padL + j * cell, y: padT + i * cell, width: cell - 2, height: cell - 2, fill: `rgba(61,139,253,${0.08 + 0.92 * a})` }));
      root.append(svg('text', { x: padL + j * cell + cell / 2 - 1, y: padT + i * cell + cell / 2 + 4, 'text-anchor': 'middle', fill: a > 0.5 ? '#fff' : '#93a0b0' }, String(v)));
    });
  });
  return root;
}

export interface TrendPoint {
  /** Start of the period (epoch milliseconds). */
  x: number;
  /** The value, or null where it is undefined (drawn as a gap with a hollow marker). */
  y: number | null;
  lo?: number | null;
  hi?: number | null;
  /** Hover text. */
  title?: string;
}

/** A value over time with interval whiskers per point (e.g. agreement per week with its
 * bootstrap interval); undefined points break the line. */
export function trendChart(points: TrendPoint[], opts: { domain?: [number, number]; height?: number; color?: string } = {}): SVGSVGElement {
  const width = 520;
  const height = opts.height ?? 220;
  const pad = { l: 44, r: 14, t: 12, b: 36 };
  const color = opts.color ?? '#3d8bfd';
  const xs = points.map((p) => p.x);
  const ys = points.flatMap((p) => [p.y, p.lo, p.hi]).filter((v): v is number => typeof v === 'number' && isFinite(v));
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  const [y0, y1] = opts.domain ?? [Math.min(0, ...ys), Math.max(1, ...ys)];
  const x = (v: number) => (x1 === x0 ? (pad.l + width - pad.r) / 2 : pad.l + 8 + (width - pad.l - pad.r - 16) * ((v - x0) / (x1 - x0)));
  const y = (v: number) => pad.t + (height - pad.t - pad.b) * (1 - (v - y0) / (y1 - y0 || 1));
  const root = svg('svg', { class: 'chart trend', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img' }) as SVGSVGElement;
  for (const t of [y0, (y0 + y1) / 2, y1]) {
    root.append(svg('line', { class: 'axis', x1: pad.l, x2: width - pad.r, y1: y(t), y2: y(t) }));
    root.append(svg('text', { x: pad.l - 4, y: y(t) + 4, 'text-anchor': 'end' }, t.toFixed(2)));
  }
  if (points.length) {
    const day = (v: number) => new Date(v).toLocaleDateString(undefined, { month: 'short', day: 'numeric' });
    root.append(svg('text', { x: x(x0), y: height - 8, 'text-anchor': points.length > 1 ? 'start' : 'middle' }, day(x0)));
    if (points.length > 1) root.append(svg('text', { x: x(x1), y: height - 8, 'text-anchor': 'end' }, day(x1)));
  }
  let d = '';
  let pen = false;
  for (const p of points) {
    if (p.y === null || !isFinite(p.y)) {
      pen = false;
      continue;
    }
    d += `${pen ? 'L' : 'M'}${x(p.x).toFixed(1)},${y(p.y).toFixed(1)} `;
    pen = true;
  }
  if (d) root.append(svg('path', { d: d.trim(), fill: 'none', stroke: color, 'stroke-width': 2 }));
  for (const p of points) {
    const cx = x(p.x);
    const g = svg('g', { class: 'trend-point' });
    if (p.title) g.append(svg('title', {}, p.title));
    if (p.lo != null && p.hi != null) {
      g.append(svg('line', { class: 'ci', x1: cx, x2: cx, y1: y(p.lo), y2: y(p.hi) }));
      g.append(svg('line', { class: 'ci', x1: cx - 4, x2: cx + 4, y1: y(p.lo), y2: y(p.lo) }));
      g.append(svg('line', { class: 'ci', x1: cx - 4, x2: cx + 4, y1: y(p.hi), y2: y(p.hi) }));
    }
    if (p.y !== null && isFinite(p.y)) g.append(svg('circle', { cx, cy: y(p.y), r: 4, fill: color }));
    else g.append(svg('circle', { cx, cy: y(y0), r: 4, fill: 'none', stroke: color }));
    root.append(g);
  }
  return root;
}
