// The dashboard's shell: the header, the router (`#/queues`,
// `#/queue/NAME`, `#/task/ID`, `#/dead/NAME`, `#/workers`) and each page's
// life: a page renders into <main>, refreshes itself through `ctx.every`,
// and everything it scheduled stops when another page is shown.

import { ApiError, signOut, token } from './api.js';
import { h, notify, replace } from './dom.js';
import { refreshTimes } from './format.js';
import * as dead from './pages/dead.js';
import * as queue from './pages/queue.js';
import * as queues from './pages/queues.js';
import * as signin from './pages/signin.js';
import * as task from './pages/task.js';
import * as workers from './pages/workers.js';

const ROUTES = [
  [/^\/?$/, queues, 'queues'],
  [/^\/queues$/, queues, 'queues'],
  [/^\/queue\/([^/]+)$/, queue, 'queues'],
  [/^\/task\/([^/]+)$/, task, 'queues'],
  [/^\/dead(?:\/([^/]+))?$/, dead, 'dead'],
  [/^\/workers$/, workers, 'workers'],
];

let generation = 0;
let timers = [];

function stopTimers() {
  for (const timer of timers) clearInterval(timer);
  timers = [];
}

/** Where the hash points: the page's path, its matches and its query. */
function location() {
  // Left encoded: each part is decoded once, as a parameter or a query.
  const hash = window.location.hash.replace(/^#/, '');
  const [path, search = ''] = hash.split('?');
  return { path, query: new URLSearchParams(search) };
}

function header(section) {
  const link = (href, label, name) =>
    h('a', { href, 'aria-current': section === name ? 'page' : null }, label);
  const out = h('button', { type: 'button', class: 'link', id: 'sign-out', on: { click: () => {
    signOut();
    window.location.hash = '#/';
    show();
  } } }, 'Sign out');
  return h('div', { class: 'bar' },
    h('a', { href: '#/', class: 'brand' }, h('img', { src: 'icon.svg', alt: '', width: 22, height: 22 }), 'codeQ'),
    h('nav', { 'aria-label': 'Pages' }, link('#/queues', 'Queues', 'queues'),
      link('#/dead', 'Dead letters', 'dead'), link('#/workers', 'Workers', 'workers')),
    out);
}

/** What a page gets: its route, refresh scheduling and error handling. */
function context(mine, matches, query) {
  const live = () => mine === generation;
  return {
    params: matches.slice(1).map((part) => (part === undefined ? undefined : decodeURIComponent(part))),
    query,
    live,
    /** Calls `fn` every `ms` while this page is shown and the tab visible. */
    every(ms, fn) {
      let busy = false;
      let failing = false;
      timers.push(setInterval(async () => {
        if (!live() || busy || document.hidden) return;
        busy = true;
        try {
          await fn();
          // The server answers again: its failure notice is over.
          if (failing) notify('');
          failing = false;
        } catch (error) {
          failing = true;
          fail(error);
        } finally {
          busy = false;
        }
      }, ms));
    },
    fail,
  };
}

/** Shows an error: a refused token sends the person back to sign in. */
function fail(error) {
  if (error instanceof ApiError && error.status === 401) {
    signOut();
    show(`Signed out: the server refused the token (${error.message}).`);
    return;
  }
  notify(error instanceof Error ? error.message : String(error));
}

/** Renders the page the hash points to (or the sign-in form). */
export async function show(reason) {
  generation += 1;
  const mine = generation;
  stopTimers();
  notify('');
  const main = document.getElementById('main');
  const top = document.getElementById('top');
  if (!token()) {
    replace(top, h('div', { class: 'bar' }, h('span', { class: 'brand' },
      h('img', { src: 'icon.svg', alt: '', width: 22, height: 22 }), 'codeQ')));
    document.title = 'Sign in · codeQ';
    signin.render(main, { reason, done: () => show() });
    return;
  }
  const { path, query } = location();
  const route = ROUTES.find(([pattern]) => pattern.test(path));
  if (!route) {
    document.title = 'Not found · codeQ';
    replace(top, header(''));
    replace(main, h('h1', {}, 'Not found'), h('p', {}, 'No page here. ', h('a', { href: '#/' }, 'Go to the queues.')));
    return;
  }
  const [pattern, page, section] = route;
  replace(top, header(section));
  replace(main, h('p', { class: 'loading' }, 'Loading…'));
  try {
    await page.render(main, context(mine, path.match(pattern), query));
  } catch (error) {
    if (mine !== generation) return;
    replace(main, h('h1', {}, 'Could not load this page'), h('p', { class: 'error', role: 'alert' }, error.message));
    fail(error);
  }
}

window.addEventListener('hashchange', async () => {
  await show();
  document.getElementById('main')?.focus({ preventScroll: true });
});
window.addEventListener('unhandledrejection', (event) => fail(event.reason));
// "3 s ago" stays true on pages that redraw only what changed.
setInterval(() => {
  const main = document.getElementById('main');
  if (main && !document.hidden) refreshTimes(main);
}, 5000);
show();
