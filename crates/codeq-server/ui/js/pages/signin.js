// Sign in: an admin token, checked against the server before it is kept
// (in this tab's session storage only).

import { ApiError, get, setToken } from '../api.js';
import { h, replace } from '../dom.js';

/** Why a token was not accepted, in words. */
function refusal(error) {
  if (!(error instanceof ApiError)) return String(error);
  if (error.status === 401) return `The server refused this token: ${error.message}`;
  if (error.status === 403) return `This token is not an admin token: ${error.message}`;
  return error.message;
}

/** The form; `done` is called once a token works. */
export function render(main, { reason, done }) {
  const input = h('input', {
    id: 'token', name: 'token', type: 'password', autocomplete: 'off', required: true,
    spellcheck: 'false', 'aria-describedby': 'token-help',
  });
  const error = h('p', { id: 'signin-error', class: 'error', role: 'alert', hidden: !reason }, reason || '');
  const submit = h('button', { type: 'submit' }, 'Sign in');
  const form = h('form', { class: 'signin', on: { submit: async (event) => {
    event.preventDefault();
    const value = input.value.trim();
    // A header cannot carry it: say so rather than "did not answer".
    if (/[^\x21-\x7e]/.test(value)) {
      error.hidden = false;
      replace(error, 'This is not a token: it holds a space or a character outside printable ASCII (pasted with it?).');
      input.select();
      return;
    }
    submit.disabled = true;
    error.hidden = true;
    try {
      await get('/admin/queues', value);
      setToken(value);
      done();
    } catch (failure) {
      error.hidden = false;
      replace(error, refusal(failure));
      input.select();
    } finally {
      submit.disabled = false;
    }
  } } },
  h('h1', {}, 'Sign in'),
  h('label', { for: 'token' }, 'Admin token'),
  input,
  h('p', { id: 'token-help', class: 'help' },
    'A token with admin rights (in local mode: the producer token of credentials.json). ',
    'It is kept in this tab only and sent as an Authorization header.'),
  error,
  submit);
  replace(main, form);
  input.focus();
}
