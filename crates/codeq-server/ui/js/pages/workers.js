// Workers: who holds leases now and who keeps subscriptions, from what
// the server knows (a worker that only long-polls shows up while it
// holds a lease). Refreshed every 2 s.

import { get, seg } from '../api.js';
import { h, replace, table } from '../dom.js';
import { exact, human, shortId, when } from '../format.js';

const REFRESH_MS = 2000;

function view(answer) {
  const workers = table([
    { label: 'Worker', cell: (w) => h('code', {}, w.workerId) },
    { label: 'Leases', cell: (w) => h('span', { title: exact(w.leases) }, human(w.leases)) },
    { label: 'Commands', cell: (w) => w.commands.map((c, i) => [i ? ', ' : '', h('a', { href: `#/queue/${seg(c)}` }, c)]) },
    { label: 'Next lease end', cell: (w) => when(w.nextLeaseEnd) },
    { label: 'Subscriptions', cell: (w) => String(w.subscriptions) },
  ], answer.workers, { empty: 'No worker holds a lease or keeps a subscription now.' });
  const leases = table([
    { label: 'Task', cell: (l) => h('a', { href: `#/task/${l.taskId}` }, shortId(l.taskId)) },
    { label: 'Command', cell: (l) => l.command },
    { label: 'Worker', cell: (l) => l.workerId },
    { label: 'Lease until', cell: (l) => when(l.leaseUntil) },
    { label: 'Attempt', cell: (l) => String(l.attempts) },
  ], answer.leases, { empty: 'No lease is held.' });
  const subscriptions = table([
    { label: 'Worker', cell: (s) => s.workerId },
    { label: 'Commands', cell: (s) => s.eventTypes.join(', ') },
    { label: 'Mode', cell: (s) => s.deliveryMode + (s.groupId ? ` (${s.groupId})` : '') },
    { label: 'Callback', cell: (s) => h('code', { class: 'clip', title: s.callbackUrl }, s.callbackUrl), class: 'wide' },
    { label: 'Expires', cell: (s) => when(s.expiresAt) },
  ], answer.subscriptions, { empty: 'No live subscription.' });
  return [
    h('h2', {}, 'Workers'), workers,
    h('h2', {}, 'Leases held', answer.truncated ? h('span', { class: 'help' }, ' (first 1000)') : null), leases,
    h('h2', {}, 'Subscriptions'), subscriptions,
  ];
}

/** Renders the page and keeps it fresh. */
export async function render(main, ctx) {
  document.title = 'Workers · codeQ';
  const content = h('div', { id: 'workers' });
  const draw = async () => {
    const answer = await get('/admin/workers');
    if (ctx.live() && !content.contains(document.activeElement)) replace(content, view(answer));
  };
  await draw();
  if (!ctx.live()) return;
  replace(main, h('div', { class: 'title' }, h('h1', {}, 'Workers'), h('span', { class: 'help' }, 'live · every 2 s')), content);
  ctx.every(REFRESH_MS, draw);
}
