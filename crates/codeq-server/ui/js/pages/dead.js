// Dead letters: a command's dead-letter queue, filtered by error text and
// failure time, page by page; replay or purge the selected ones or all
// that match, each after a confirmation.

import { get, post, query, seg } from '../api.js';
import { button, confirmAction, h, notify, replace, table } from '../dom.js';
import { exact, human } from '../format.js';
import { taskColumns } from './queue.js';

const PAGE = 50;
const MAX_BULK = 10000;

/** An RFC 3339 time from a datetime-local input, or undefined. */
function isoOf(input) {
  return input.value ? new Date(input.value).toISOString() : undefined;
}

function picker(queues, command) {
  const select = h('select', { id: 'dead-command', on: { change: () => {
    window.location.hash = `#/dead/${seg(select.value)}`;
  } } },
  h('option', { value: '', disabled: true, selected: !command }, 'Choose a command…'),
  queues.map((q) => h('option', { value: q.command, selected: q.command === command },
    `${q.command} (${human(q.dlq)} dead)`)));
  return h('div', { class: 'field inline' }, h('label', { for: 'dead-command' }, 'Command'), select);
}

/** The filter form, and `read()`: the filter its fields hold now. */
function filterForm(onApply) {
  const form = h('form', { class: 'filters', id: 'dead-filter' },
    h('div', {}, h('label', { for: 'error-contains' }, 'Error contains'), h('input', { id: 'error-contains', type: 'search' })),
    h('div', {}, h('label', { for: 'failed-after' }, 'Failed after'), h('input', { id: 'failed-after', type: 'datetime-local' })),
    h('div', {}, h('label', { for: 'failed-before' }, 'Failed before'), h('input', { id: 'failed-before', type: 'datetime-local' })),
    h('button', { type: 'submit' }, 'Filter'));
  const read = () => ({
    errorContains: form.querySelector('#error-contains').value.trim() || undefined,
    failedAfter: isoOf(form.querySelector('#failed-after')),
    failedBefore: isoOf(form.querySelector('#failed-before')),
  });
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    onApply(read());
  });
  return { form, read };
}

/** What a filter keeps, in words, for a confirmation. */
function describeFilter(filter) {
  const parts = [
    filter.errorContains && `whose error contains “${filter.errorContains}”`,
    filter.failedAfter && `that failed after ${filter.failedAfter}`,
    filter.failedBefore && `that failed before ${filter.failedBefore}`,
  ].filter(Boolean);
  return parts.length ? parts.join(' and ') : '(no filter: all of them)';
}

const sameFilter = (a, b) => ['errorContains', 'failedAfter', 'failedBefore'].every((key) => a[key] === b[key]);

/** Renders the page. */
export async function render(main, ctx) {
  const command = ctx.params[0];
  document.title = command ? `Dead letters of ${command} · codeQ` : 'Dead letters · codeQ';
  const { queues } = await get('/admin/queues');
  if (!ctx.live()) return;
  const withDead = queues.filter((q) => q.dlq > 0 || q.command === command);
  const top = h('div', { class: 'title' }, h('h1', {}, 'Dead letters'), picker(withDead, command));
  if (!command) {
    replace(main, top, withDead.length
      ? table([
        { label: 'Command', cell: (q) => h('a', { href: `#/dead/${seg(q.command)}` }, q.command) },
        { label: 'Dead letters', cell: (q) => h('span', { title: exact(q.dlq) }, human(q.dlq)) },
      ], withDead)
      : h('p', { class: 'empty' }, 'No dead letters. Tasks land here after their last attempt fails.'));
    return;
  }

  const state = { filter: {}, trail: [], cursor: null, next: null, selected: new Set() };
  const list = h('section', { class: 'dead' });
  const count = h('span', { id: 'selected-count' }, '0 selected');

  const selection = () => (state.selected.size ? { ids: [...state.selected] } : null);
  const describe = (body) => (body.ids ? `${exact(body.ids.length)} selected dead letter${body.ids.length === 1 ? '' : 's'}`
    : `every dead letter of ${command} ${describeFilter(body)} (at most ${exact(MAX_BULK)})`);

  const bulk = async (action, body) => {
    if (!body) return notify('Select dead letters first.');
    const verb = action === 'replay' ? 'Replay' : 'Purge';
    const consequence = action === 'replay' ? 'They go back to the queue with maxAttempts deliveries more.' : 'They are deleted for good.';
    if (!await confirmAction(`${verb}?`, `${verb} ${describe(body)}? ${consequence}`, verb)) return;
    try {
      const answer = await post(`/admin/queues/${seg(command)}/dlq/${action}`, body);
      const done = answer.replayed ?? answer.purged ?? 0;
      notify(`${action === 'replay' ? 'Replayed' : 'Purged'} ${exact(done)} dead letter${done === 1 ? '' : 's'}.`, 'ok');
      state.selected.clear();
      replace(count, '0 selected');
      state.trail = [];
      state.cursor = null;
      await draw();
    } catch (error) {
      notify(`${verb} failed: ${error.message}`);
    }
  };

  const toggle = (id, on) => {
    if (on) state.selected.add(id);
    else state.selected.delete(id);
    replace(count, `${exact(state.selected.size)} selected`);
  };

  async function draw() {
    const page = await get(`/admin/queues/${seg(command)}/dlq${query({ ...state.filter, limit: PAGE, cursor: state.cursor })}`);
    if (!ctx.live()) return;
    state.next = page.nextCursor || null;
    const boxes = [];
    const all = h('input', { type: 'checkbox', id: 'select-page', 'aria-label': 'Select this page', on: { change: () => {
      for (const box of boxes) {
        box.checked = all.checked;
        toggle(box.value, all.checked);
      }
    } } });
    const pick = {
      label: all,
      cell: (t) => {
        const box = h('input', { type: 'checkbox', value: t.id, 'aria-label': `Select ${t.id}`, checked: state.selected.has(t.id),
          on: { change: () => toggle(t.id, box.checked) } });
        boxes.push(box);
        return box;
      },
    };
    const number = state.trail.length + 1;
    replace(list,
      table([pick, ...taskColumns()], page.tasks, { empty: 'No dead letter matches.' }),
      h('div', { class: 'pager' },
        button('← Previous', async () => { state.cursor = state.trail.pop() ?? null; await draw(); },
          { disabled: number === 1, class: 'secondary', id: 'prev-page' }),
        h('span', { id: 'page-info' }, `Page ${number}`),
        button('Next →', async () => { state.trail.push(state.cursor); state.cursor = state.next; await draw(); },
          { disabled: !state.next, class: 'secondary', id: 'next-page' })));
  }

  const actions = h('div', { class: 'actions bulk' }, count,
    button('Replay selected', () => bulk('replay', selection()), { id: 'replay-selected' }),
    button('Purge selected', () => bulk('purge', selection()), { id: 'purge-selected', class: 'danger' }),
    button('Replay all matching', async () => bulk('replay', await matching()), { id: 'replay-matching', class: 'secondary' }),
    button('Purge all matching', async () => bulk('purge', await matching()), { id: 'purge-matching', class: 'danger secondary' }));
  const apply = async (filter) => {
    Object.assign(state, { filter, trail: [], cursor: null });
    state.selected.clear();
    replace(count, '0 selected');
    await draw();
  };
  const filters = filterForm(apply);
  // "All matching" acts on the filter the form shows, applied first so
  // that the list shows what it will act on.
  async function matching() {
    const shown = filters.read();
    if (!sameFilter(shown, state.filter)) await apply(shown);
    return { ...shown, limit: MAX_BULK };
  }
  replace(main, top, filters.form, actions, list);
  await draw();
}
