// Queue: one command's depths and settings (pause / resume, flow limits)
// and its tasks in each state, page by page. Depths refresh every 2 s;
// the first page of tasks too, unless focus is in the table.

import { get, post, put, seg, query } from '../api.js';
import { button, h, notify, replace, table } from '../dom.js';
import { num, shortId, when, exact, plain } from '../format.js';
import { limits, stateBadge } from './queues.js';

const REFRESH_MS = 2000;
const PAGE = 50;
const STATES = [['PENDING', 'Pending'], ['IN_PROGRESS', 'In progress'], ['COMPLETED', 'Completed'],
  ['FAILED', 'Failed'], ['CANCELLED', 'Cancelled']];

/** The columns of a task list (shared with the dead-letter page). */
export function taskColumns() {
  return [
    { label: 'Task', cell: (t) => h('a', { href: `#/task/${t.id}`, class: 'task-link' }, shortId(t.id)) },
    { label: 'Status', cell: (t) => h('span', { class: `status ${t.status}` }, t.status) },
    { label: 'Priority', cell: (t) => String(t.priority), class: 'wide' },
    { label: 'Attempts', cell: (t) => t.replays ? `${t.attempts} (replayed)` : `${t.attempts}/${t.maxAttempts}` },
    { label: 'Worker', cell: (t) => t.workerId || '–', class: 'wide' },
    { label: 'Created', cell: (t) => when(t.createdAt) },
    { label: 'Updated', cell: (t) => when(t.updatedAt), class: 'wide' },
    // A dead letter's error is MAX_ATTEMPTS; its last reason says why.
    { label: 'Error', cell: (t) => { const text = (t.error === 'MAX_ATTEMPTS' && t.lastReason) || t.error || t.lastReason || ''; return h('span', { class: 'clip', title: text }, text); }, class: 'wide' },
  ];
}

function optional(input) {
  const text = input.value.trim();
  return text === '' ? undefined : Number(text);
}

/** The settings form: pause / resume at once, limits on Save. */
function settingsForm(command, stats, onChange) {
  const field = (id, label, value, attrs) => [
    h('label', { for: id }, label),
    h('input', { id, type: 'number', inputmode: 'decimal', value: plain(value) ?? '', placeholder: 'none', ...attrs }),
  ];
  const form = h('form', { class: 'settings', id: 'settings' },
    h('div', { class: 'fields' },
      h('div', {}, field('max-in-flight', 'Max in flight', stats.maxInFlight, { min: 1, step: 1 })),
      h('div', {}, field('rate', 'Claims per second', stats.ratePerSecond, { min: 0.001, step: 'any' })),
      h('div', {}, field('burst', 'Burst', stats.burst, { min: 1, step: 1 }))),
    h('button', { type: 'submit' }, 'Save limits'));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    // Pause as it is now, not as it was when the page was drawn: a pause
    // made elsewhere meanwhile is kept (read, change, write back).
    let current;
    try {
      current = await get(`/admin/queues/${seg(command)}`);
    } catch (error) {
      notify(`Limits not saved: ${error.message}`);
      return;
    }
    const body = {
      paused: current.paused,
      maxInFlight: optional(form.querySelector('#max-in-flight')),
      ratePerSecond: optional(form.querySelector('#rate')),
      burst: optional(form.querySelector('#burst')),
    };
    try {
      await put(`/admin/queues/${seg(command)}/settings`, body);
      notify('Limits saved.', 'ok');
      onChange();
    } catch (error) {
      notify(`Limits not saved: ${error.message}`);
    }
  });
  return form;
}

function pauseButton(command, paused, onChange) {
  const action = paused ? 'resume' : 'pause';
  return button(paused ? 'Resume' : 'Pause', async () => {
    try {
      await post(`/admin/queues/${seg(command)}/${action}`);
      notify(paused ? `${command} resumed: claims go on.` : `${command} paused: claims skip it.`, 'ok');
      onChange();
    } catch (error) {
      notify(`Could not ${action}: ${error.message}`);
    }
  }, { id: 'pause-toggle', class: paused ? '' : 'secondary' });
}

function countsLine(stats) {
  return h('div', { class: 'counts wide-counts', id: 'queue-counts' },
    [['ready', 'Ready'], ['delayed', 'Delayed'], ['inProgress', 'In progress'], ['dlq', 'DLQ']].map(([field, label]) =>
      h('div', { class: `count ${field}` }, h('span', { class: 'label' }, label), num(stats[field], { class: `num count-${field}` }))));
}

/** Renders the page and keeps its counts fresh. */
export async function render(main, ctx) {
  const command = ctx.params[0];
  const state = STATES.some(([s]) => s === ctx.query.get('state')) ? ctx.query.get('state') : 'PENDING';
  document.title = `${command} · codeQ`;
  const head = h('section', { class: 'queue-head' });
  const tasks = h('section', { class: 'tasks' });
  // `drawn` counts the task pages asked for: an answer to an older ask (a
  // slow refresh overtaken by a click on Next) is dropped, not drawn.
  const pager = { trail: [], cursor: null, next: null, drawn: 0 };

  const drawHead = (stats) => {
    const focused = head.contains(document.activeElement) ? document.activeElement.id : null;
    const refresh = async () => drawHead(await get(`/admin/queues/${seg(command)}`));
    replace(head,
      h('div', { class: 'state' }, stateBadge(stats.paused), h('span', { class: 'limits' }, limits(stats)),
        pauseButton(command, stats.paused, refresh)),
      countsLine(stats),
      settingsForm(command, stats, refresh));
    if (focused) document.getElementById(focused)?.focus();
  };

  const drawTasks = async () => {
    pager.drawn += 1;
    const asked = pager.drawn;
    const page = await get(`/admin/tasks${query({ command, status: state, limit: PAGE, cursor: pager.cursor })}`);
    if (!ctx.live() || asked !== pager.drawn) return;
    pager.next = page.nextCursor || null;
    const number = pager.trail.length + 1;
    const first = (number - 1) * PAGE + 1;
    const range = page.tasks.length ? `${exact(first)}–${exact(first + page.tasks.length - 1)}` : 'none';
    const prev = button('← Previous', async () => {
      pager.cursor = pager.trail.pop() ?? null;
      await drawTasks();
    }, { disabled: number === 1, id: 'prev-page', class: 'secondary' });
    const next = button('Next →', async () => {
      pager.trail.push(pager.cursor);
      pager.cursor = pager.next;
      await drawTasks();
    }, { disabled: !pager.next, id: 'next-page', class: 'secondary' });
    replace(tasks,
      table(taskColumns(), page.tasks, { empty: `No ${state.toLowerCase().replace('_', ' ')} task.` }),
      h('div', { class: 'pager' }, prev, h('span', { id: 'page-info', dataset: { page: String(number) } },
        `Page ${number} · ${range}`), next));
  };

  const tabs = h('nav', { class: 'tabs', 'aria-label': 'Task state' }, STATES.map(([value, label]) =>
    h('a', { href: `#/queue/${seg(command)}?state=${value}`, 'aria-current': value === state ? 'page' : null }, label)),
  h('a', { href: `#/dead/${seg(command)}` }, 'Dead letters'));

  const stats = await get(`/admin/queues/${seg(command)}`);
  if (!ctx.live()) return;
  replace(main, h('div', { class: 'title' }, h('h1', {}, command), h('a', { href: '#/queues' }, '← All queues')),
    head, h('h2', {}, 'Tasks'), tabs, tasks);
  drawHead(stats);
  await drawTasks();
  ctx.every(REFRESH_MS, async () => {
    const fresh = await get(`/admin/queues/${seg(command)}`);
    if (!ctx.live()) return;
    if (!head.contains(document.activeElement)) drawHead(fresh);
    else replace(head.querySelector('#queue-counts'), [...countsLine(fresh).childNodes]);
    if (pager.trail.length === 0 && !tasks.contains(document.activeElement)) await drawTasks();
  });
}
