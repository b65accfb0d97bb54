// Queues: every command with its depths, pause and limits, and its last
// hour as two small charts; refreshed every 2 s in place (focus and
// scroll stay where they are).

import { get, seg } from '../api.js';
import { bars } from '../chart.js';
import { h, replace } from '../dom.js';
import { exact, num, perSecond } from '../format.js';

const REFRESH_MS = 2000;
const COUNTS = [['ready', 'Ready'], ['delayed', 'Delayed'], ['inProgress', 'In progress'], ['dlq', 'DLQ']];

/** "at most 5 in flight · 2/s, burst 4", or "no limits". */
export function limits(settings) {
  const parts = [];
  if (settings.maxInFlight !== undefined) parts.push(`at most ${exact(settings.maxInFlight)} in flight`);
  if (settings.ratePerSecond !== undefined) {
    parts.push(perSecond(settings.ratePerSecond) + (settings.burst !== undefined ? `, burst ${exact(settings.burst)}` : ''));
  }
  return parts.length ? parts.join(' · ') : 'no limits';
}

/** The state badge of a command. */
export function stateBadge(paused) {
  return paused
    ? h('span', { class: 'badge paused', title: 'Claims skip this command; creates are accepted' }, 'paused')
    : h('span', { class: 'badge running' }, 'running');
}

function emptySeries(minutes) {
  return { completed: new Array(minutes).fill(0), failed: new Array(minutes).fill(0) };
}

function charts(series, from) {
  return [
    h('figure', {}, bars(series.completed, { from, label: 'Completed', kind: 'ok' }), h('figcaption', {}, 'completed / min')),
    h('figure', {}, bars(series.failed, { from, label: 'Failed', kind: 'bad' }), h('figcaption', {}, 'failed / min')),
  ];
}

function countCell(queue, field, label) {
  const value = num(queue[field], { class: `num count-${field}` });
  const shown = field === 'dlq' && queue.dlq > 0
    ? h('a', { href: `#/dead/${seg(queue.command)}`, title: `${exact(queue.dlq)} dead letters` }, value)
    : value;
  return h('div', { class: `count ${field}` }, h('span', { class: 'label' }, label), shown);
}

/** One command's card. */
function card(queue, series, from) {
  const counts = h('div', { class: 'counts' }, COUNTS.map(([field, label]) => countCell(queue, field, label)));
  const state = h('div', { class: 'state' }, stateBadge(queue.paused), h('span', { class: 'limits' }, limits(queue)));
  return h('article', { class: 'card queue', dataset: { command: queue.command } },
    h('h2', {}, h('a', { href: `#/queue/${seg(queue.command)}` }, queue.command)),
    state, counts, h('div', { class: 'charts' }, charts(series, from)));
}

function totals(list) {
  const sum = (field) => list.reduce((total, queue) => total + queue[field], 0);
  return h('p', { class: 'summary', id: 'totals' },
    `${list.length} command${list.length === 1 ? '' : 's'} · `,
    num(sum('ready')), ' ready · ', num(sum('delayed')), ' delayed · ',
    num(sum('inProgress')), ' in progress · ', num(sum('dlq')), sum('dlq') === 1 ? ' dead letter · ' : ' dead letters · ',
    h('span', { class: 'updated', id: 'updated' }, `updated ${new Date().toLocaleTimeString()}`));
}

async function load() {
  const [{ queues }, throughput] = await Promise.all([get('/admin/queues'), get('/admin/throughput')]);
  const byCommand = new Map(throughput.commands.map((s) => [s.command, s]));
  return { queues, byCommand, from: throughput.from, minutes: throughput.minutes };
}

/** Renders the page and keeps it fresh. */
export async function render(main, ctx) {
  document.title = 'Queues · codeQ';
  const started = performance.now();
  const summary = h('div');
  const grid = h('div', { class: 'grid', id: 'queues' });
  const cards = new Map();
  let drawnNames = null;

  const draw = ({ queues, byCommand, from, minutes }) => {
    replace(summary, totals(queues));
    const names = queues.map((q) => q.command).join('\n');
    if (names !== drawnNames) {
      drawnNames = names;
      cards.clear();
      for (const q of queues) cards.set(q.command, card(q, byCommand.get(q.command) || emptySeries(minutes), from));
      replace(grid, queues.length ? [...cards.values()] : h('p', { class: 'empty' }, 'No command has been used yet.'));
      return;
    }
    for (const q of queues) {
      const el = cards.get(q.command);
      const series = byCommand.get(q.command) || emptySeries(minutes);
      // Only what changed is redrawn, so a focused link keeps its focus.
      const stamp = JSON.stringify([q, series.completed, series.failed, from]);
      if (el.dataset.stamp === stamp) continue;
      el.dataset.stamp = stamp;
      replace(el.querySelector('.state'), stateBadge(q.paused), h('span', { class: 'limits' }, limits(q)));
      replace(el.querySelector('.counts'), COUNTS.map(([field, label]) => countCell(q, field, label)));
      replace(el.querySelector('.charts'), charts(series, from));
    }
  };

  const data = await load();
  if (!ctx.live()) return;
  replace(main, h('div', { class: 'title' }, h('h1', {}, 'Queues'),
    h('span', { class: 'help' }, 'live · every 2 s')), summary, grid);
  draw(data);
  // For the test: ms since the navigation began, and since this page began.
  main.dataset.shownAt = String(Math.round(performance.now()));
  main.dataset.loadedMs = String(Math.round(performance.now() - started));
  ctx.every(REFRESH_MS, async () => {
    const fresh = await load();
    if (ctx.live()) draw(fresh);
  });
}
