// Small bar charts of a command's last hour, one bar per minute, drawn
// as SVG (no library, no inline style: colours come from style.css).

import { exact } from './format.js';

const NS = 'http://www.w3.org/2000/svg';
const WIDTH = 180;
const HEIGHT = 36;

function svg(tag, attrs = {}) {
  const el = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attrs)) el.setAttribute(name, String(value));
  return el;
}

/** "14:05" for the minute starting at `ms`. */
function clock(ms) {
  const date = new Date(ms);
  return `${String(date.getHours()).padStart(2, '0')}:${String(date.getMinutes()).padStart(2, '0')}`;
}

/**
 * Bars of `values` (per minute, oldest first, the first starting at
 * `from`), labelled `label`; `kind` picks the colour (`ok` or `bad`).
 */
export function bars(values, { from, label, kind = 'ok' }) {
  const total = values.reduce((sum, v) => sum + v, 0);
  const peak = Math.max(1, ...values);
  const step = WIDTH / values.length;
  const root = svg('svg', {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    class: `chart ${kind}`,
    role: 'img',
    'aria-label': `${label}: ${exact(total)} in the last hour, at most ${exact(peak)} a minute`,
  });
  const title = svg('title');
  title.textContent = `${label}: ${exact(total)} in the last hour (peak ${exact(Math.max(0, ...values))}/min)`;
  root.append(title, svg('line', { x1: 0, y1: HEIGHT - 0.5, x2: WIDTH, y2: HEIGHT - 0.5, class: 'axis' }));
  const start = Date.parse(from);
  values.forEach((value, index) => {
    if (!value) return;
    const height = Math.max(1.5, (value / peak) * (HEIGHT - 2));
    const bar = svg('rect', { x: index * step + 0.3, y: HEIGHT - height, width: Math.max(0.5, step - 0.6), height });
    const tip = svg('title');
    tip.textContent = `${clock(start + index * 60000)}: ${exact(value)} ${label.toLowerCase()}`;
    bar.append(tip);
    root.append(bar);
  });
  return root;
}
