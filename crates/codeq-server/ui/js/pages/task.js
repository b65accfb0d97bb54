// Task: one task in full — payload and result pretty-printed, attempts,
// worker, lease, errors, artifacts (downloaded with the token), the
// result callback — with cancel and, for a dead letter, replay. It
// refreshes every 2 s, so a replayed task is seen running and ending.

import { blob, get, post, seg } from '../api.js';
import { button, confirmAction, facts, h, notify, replace } from '../dom.js';
import { pretty, when } from '../format.js';

const REFRESH_MS = 2000;
const TERMINAL = new Set(['COMPLETED', 'FAILED', 'CANCELLED']);

/** A name as the server writes it in a URL: every byte but `A-Z a-z 0-9 - . _ ~` as `%XX`. */
const urlName = (name) =>
  encodeURIComponent(name).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);

/**
 * The API path of an artifact this server stores (its URL ends with the
 * task's artifact path and the name, percent-encoded, or as it is in
 * results stored by earlier releases), or null for one elsewhere. The
 * path encodes the name: `%41.txt` or `a?b.txt` reach their files.
 */
function storedPath(url, taskId, name) {
  const prefix = `/v1/codeq/tasks/${taskId}/artifacts/`;
  const stored = url.endsWith(prefix + urlName(name)) || url.endsWith(prefix + name);
  return stored ? `/tasks/${seg(taskId)}/artifacts/${seg(name)}` : null;
}

/** Fetches a stored artifact with the token and hands it to the browser. */
async function download(path, name) {
  try {
    const bytes = await blob(path);
    const url = URL.createObjectURL(bytes);
    const link = h('a', { href: url, download: name, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  } catch (error) {
    notify(`Download of ${name} failed: ${error.message}`);
  }
}

function artifacts(list, taskId) {
  if (!list || !list.length) return null;
  return h('section', {}, h('h2', {}, 'Artifacts'), h('ul', { class: 'artifacts' }, list.map((artifact) => {
    const path = storedPath(artifact.url, taskId, artifact.name);
    const type = artifact.contentType ? h('span', { class: 'help' }, ` ${artifact.contentType}`) : null;
    const link = path
      ? h('a', { href: '#', class: 'download', on: { click: (event) => {
        event.preventDefault();
        download(path, artifact.name);
      } } }, artifact.name)
      : h('a', { href: artifact.url, target: '_blank', rel: 'noopener noreferrer' }, artifact.name);
    return h('li', {}, link, type);
  })));
}

function webhookFacts(detail) {
  const hook = detail.webhook;
  if (!hook) return null;
  const words = { waiting: 'waiting for the task to end', owed: 'being delivered', settled: 'delivered or given up' };
  const outcomes = { delivered: 'delivered', gave_up: 'given up: every attempt failed', refused: 'not sent: its URL was refused' };
  const said = hook.outcome ? outcomes[hook.outcome] || hook.outcome : words[hook.state] || hook.state;
  return h('section', {}, h('h2', {}, 'Result callback'), facts([
    ['URL', h('code', {}, detail.task.webhook)],
    ['State', h('span', { id: 'webhook-state' }, `${hook.state} (${said})`)],
    ['Attempts', hook.attempts === undefined ? null : String(hook.attempts)],
    ['Next attempt', hook.nextAttemptAt ? when(hook.nextAttemptAt) : null],
    ['Delivery', hook.deliveryId ? h('code', {}, hook.deliveryId) : null],
  ]));
}

function actions(detail, reload) {
  const { task } = detail;
  const list = [];
  if (!TERMINAL.has(task.status)) {
    list.push(button('Cancel task', async () => {
      if (!await confirmAction('Cancel this task?', `Task ${task.id} of ${task.command} ends as CANCELLED; a worker holding it loses its lease.`, 'Cancel task')) return;
      try {
        await post(`/tasks/${seg(task.id)}/cancel`, {});
        notify('Task cancelled.', 'ok');
        await reload();
      } catch (error) {
        notify(`Not cancelled: ${error.message}`);
      }
    }, { class: 'danger', id: 'cancel-task' }));
  }
  if (detail.deadLettered) {
    list.push(button('Replay', async () => {
      if (!await confirmAction('Replay this dead letter?', `Task ${task.id} goes back to ${task.command}'s queue with ${task.maxAttempts} deliveries more.`, 'Replay')) return;
      try {
        await post(`/admin/queues/${seg(task.command)}/dlq/replay`, { ids: [task.id] });
        notify('Replayed: the task is pending again.', 'ok');
        await reload();
      } catch (error) {
        notify(`Not replayed: ${error.message}`);
      }
    }, { id: 'replay-task' }));
  }
  return list.length ? h('div', { class: 'actions' }, list) : null;
}

function body(detail, reload) {
  const { task, result } = detail;
  const worker = task.workerId || detail.lastWorkerId;
  return [
    h('div', { class: 'title' },
      h('h1', {}, 'Task ', h('code', { class: 'id' }, task.id)),
      h('span', { class: `status big ${task.status}`, id: 'task-status' }, task.status),
      detail.deadLettered ? h('span', { class: 'badge paused' }, 'dead letter') : null),
    actions(detail, reload),
    facts([
      ['Command', h('a', { href: `#/queue/${seg(task.command)}` }, task.command)],
      ['Attempts', task.replays
        ? `${task.attempts} (replayed ${task.replays}×, ${task.maxAttempts} per round)`
        : `${task.attempts} of ${task.maxAttempts}`],
      ['Worker', worker ? h('span', { title: task.workerId ? 'holds the lease' : 'last delivery' }, worker) : null],
      ['Lease until', task.leaseUntil ? when(task.leaseUntil) : null],
      ['Priority', String(task.priority)],
      ['Created', when(task.createdAt)],
      ['Updated', when(task.updatedAt)],
      ['Run at', task.runAt ? when(task.runAt) : null],
      ['Visible at', task.status === 'PENDING' ? when(detail.visibleAt) : null],
      ['Completed', task.completedAt ? when(task.completedAt) : null],
      ['Replays', task.replays ? String(task.replays) : null],
      ['Idempotency key', task.idempotencyKey ? h('code', {}, task.idempotencyKey) : null],
      ['Error', task.error ? h('span', { class: 'error' }, task.error) : null],
      ['Last reason', task.lastReason ? h('span', { class: 'error' }, task.lastReason) : null],
    ]),
    h('section', {}, h('h2', {}, 'Payload'), h('pre', { class: 'json', id: 'payload', tabindex: 0 }, pretty(task.payload ?? ''))),
    result ? h('section', {}, h('h2', {}, 'Result'),
      facts([['Status', result.status], ['Ended', when(result.completedAt)],
        ['Error', result.error ? h('span', { class: 'error' }, result.error) : null]]),
      result.result !== undefined ? h('pre', { class: 'json', id: 'result', tabindex: 0 }, pretty(result.result)) : null)
      : null,
    artifacts(result?.artifacts, task.id),
    webhookFacts(detail),
  ];
}

/**
 * Whether a redraw now would take something from the person: a text
 * selection in the page, or focus on an element a redraw cannot give it
 * back to (one without an id). The change is drawn at a later refresh.
 */
function interrupting(main) {
  const selection = window.getSelection();
  const selecting = selection && !selection.isCollapsed && main.contains(selection.anchorNode);
  const active = document.activeElement;
  return Boolean(selecting || (active && active !== main && main.contains(active) && !active.id));
}

/** Renders the page and keeps it fresh. */
export async function render(main, ctx) {
  const id = ctx.params[0];
  document.title = `Task ${id.slice(-12)} · codeQ`;
  let last = '';
  const draw = async () => {
    const detail = await get(`/admin/tasks/${seg(id)}`);
    if (!ctx.live()) return;
    const text = JSON.stringify(detail);
    if (text === last || (last && interrupting(main))) return;
    last = text;
    const focused = main.contains(document.activeElement) ? document.activeElement.id : null;
    replace(main, body(detail, draw));
    if (focused) document.getElementById(focused)?.focus();
  };
  await draw();
  ctx.every(REFRESH_MS, draw);
}
