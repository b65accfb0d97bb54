// Numbers and times for people: 1.2k, 3 min ago; the exact value is in
// the element's title (shown on hover).

import { h } from './dom.js';

const exactFormat = new Intl.NumberFormat('en');

/**
 * A number as `parseExact` may give it (its source text kept, as for a
 * rate of 2.0): a plain number, which text and arithmetic can take.
 */
export function plain(n) {
  return typeof JSON.isRawJSON === 'function' && JSON.isRawJSON(n) ? Number(n.rawJSON) : n;
}

/** 1234 → "1.2k", 5600000 → "5.6M"; below 1000 the number itself. */
export function human(value) {
  const n = plain(value);
  if (n === null || n === undefined) return '–';
  const abs = Math.abs(n);
  const units = [[1e12, 'T'], [1e9, 'G'], [1e6, 'M'], [1e3, 'k']];
  for (const [size, unit] of units) {
    if (abs >= size) {
      const scaled = n / size;
      const text = Math.abs(scaled) >= 100 ? Math.round(scaled).toString() : scaled.toFixed(1).replace(/\.0$/, '');
      return `${text}${unit}`;
    }
  }
  return String(n);
}

/** The exact number, with thousands separators. */
export function exact(n) {
  return n === null || n === undefined ? '' : exactFormat.format(plain(n));
}

const rateFormat = new Intl.NumberFormat('en', { maximumSignificantDigits: 6 });

/** A rate per second: 2 → "2/s", 0.0005 → "0.0005/s". */
export function perSecond(n) {
  return `${rateFormat.format(plain(n))}/s`;
}

/** A number for people, exact on hover. */
export function num(n, attrs = {}) {
  return h('span', { class: 'num', title: exact(n), dataset: { value: String(plain(n) ?? '') }, ...attrs }, human(n));
}

/** "3 min ago", "in 20 s", from an RFC 3339 time. */
export function ago(iso, now = Date.now()) {
  if (!iso) return '–';
  const seconds = Math.round((Date.parse(iso) - now) / 1000);
  const abs = Math.abs(seconds);
  const steps = [[86400, 'd'], [3600, 'h'], [60, 'min'], [1, 's']];
  if (abs < 2) return 'just now';
  for (const [size, unit] of steps) {
    if (abs >= size) {
      const count = Math.floor(abs / size);
      return seconds < 0 ? `${count} ${unit} ago` : `in ${count} ${unit}`;
    }
  }
  return 'just now';
}

/** A time for people, the exact time on hover. */
export function when(iso) {
  if (!iso) return h('span', {}, '–');
  return h('time', { datetime: iso, title: iso }, ago(iso));
}

/** Brings every relative time under `root` up to date (text only). */
export function refreshTimes(root) {
  for (const el of root.querySelectorAll('time[datetime]')) {
    const text = ago(el.getAttribute('datetime'));
    if (el.textContent !== text) el.textContent = text;
  }
}

/**
 * JSON text as a value whose numbers keep their digits: a number that a
 * double would change (123456789012345678901234567890, 1.50) is kept as
 * its source text, which JSON.stringify writes back as it came (where the
 * browser has JSON.rawJSON; elsewhere it is parsed as usual).
 */
export function parseExact(text) {
  if (typeof JSON.rawJSON !== 'function') return JSON.parse(text);
  return JSON.parse(text, (key, value, context) =>
    typeof value === 'number' && context && String(value) !== context.source
      ? JSON.rawJSON(context.source)
      : value);
}

/** Pretty-printed JSON of a value, or of a JSON text (shown as is when it is not JSON). */
export function pretty(value) {
  if (typeof value === 'string') {
    try {
      return JSON.stringify(parseExact(value), null, 2);
    } catch {
      return value;
    }
  }
  return JSON.stringify(value, null, 2);
}

/** A short task id: the last 12 characters, the whole id on hover. */
export function shortId(id) {
  return h('code', { title: id, class: 'id' }, `…${id.slice(-12)}`);
}
