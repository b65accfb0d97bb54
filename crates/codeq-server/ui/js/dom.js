// Building the page: elements from plain data, text set as text (never
// parsed as HTML), and the few shared widgets (tables, the pager, the
// confirmation dialog, the notice line).

/**
 * An element: `h('a', {href: '#/x', class: 'link', on: {click: f}}, 'text', child)`.
 * Attributes that are null, undefined or false are left out; children
 * may be strings, numbers, nodes, arrays of them, or null.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === 'on') {
      for (const [event, handler] of Object.entries(value)) el.addEventListener(event, handler);
    } else if (name === 'dataset') {
      Object.assign(el.dataset, value);
    } else if (name === 'value' || name === 'checked' || name === 'disabled') {
      el[name] = value;
    } else {
      el.setAttribute(name, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

/** Appends children (strings become text nodes). */
export function append(el, children) {
  for (const child of [children].flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replaces every child of `el`. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/**
 * A table: `columns` are `{label, cell: row => node|string, class?}`;
 * `empty` is shown in one cell when there are no rows.
 */
export function table(columns, rows, { empty = 'Nothing here.', caption = null } = {}) {
  const head = h('tr', {}, columns.map((c) => h('th', { scope: 'col', class: c.class }, c.label)));
  const body = rows.length
    ? rows.map((row) => h('tr', {}, columns.map((c) => h('td', { class: c.class }, c.cell(row)))))
    : h('tr', {}, h('td', { colspan: columns.length, class: 'empty' }, empty));
  return h('div', { class: 'scroll' },
    h('table', {}, caption ? h('caption', {}, caption) : null, h('thead', {}, head), h('tbody', {}, body)));
}

/** A list of term / value pairs; pairs whose value is null are left out. */
export function facts(pairs) {
  const items = pairs.filter(([, value]) => value !== null && value !== undefined && value !== '');
  return h('dl', { class: 'facts' }, items.map(([term, value]) => [h('dt', {}, term), h('dd', {}, value)]));
}

/** A button. */
export function button(label, onClick, attrs = {}) {
  return h('button', { type: 'button', ...attrs, on: { click: onClick } }, label);
}

/** Shows `message` in the notice line (an error unless `kind` says otherwise). */
export function notify(message, kind = 'error') {
  const notice = document.getElementById('notice');
  if (!notice) return;
  notice.className = `notice ${kind}`;
  notice.hidden = !message;
  replace(notice, message || '');
}

/**
 * Asks before an action that cannot be undone. Resolves true when the
 * person confirms; Escape or Go back resolve false.
 */
export function confirmAction(title, message, actionLabel) {
  return new Promise((resolve) => {
    const dialog = h('dialog', { class: 'confirm', 'aria-labelledby': 'confirm-title' });
    const done = (answer) => {
      dialog.close();
      dialog.remove();
      resolve(answer);
    };
    // "Go back", not "Cancel": beside "Cancel task" that would read as the action.
    const cancel = button('Go back', () => done(false), { class: 'secondary' });
    const ok = button(actionLabel, () => done(true), { class: 'danger', id: 'confirm-ok' });
    append(dialog, [h('h2', { id: 'confirm-title' }, title), h('p', {}, message),
      h('div', { class: 'actions' }, cancel, ok)]);
    dialog.addEventListener('cancel', (event) => {
      event.preventDefault();
      done(false);
    });
    document.body.append(dialog);
    dialog.showModal();
    cancel.focus();
  });
}
