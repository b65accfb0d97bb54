// The admin API, called with the token the person signed in with. The
// token lives in this tab's session storage only and travels in the
// Authorization header, never in a URL.

import { parseExact } from './format.js';

const KEY = 'codeq.adminToken';
const BASE = '/v1/codeq';

/** The token of this tab, or null. */
export function token() {
  return sessionStorage.getItem(KEY);
}

/** Keeps `value` for this tab. */
export function setToken(value) {
  sessionStorage.setItem(KEY, value);
}

/** Forgets the token. */
export function signOut() {
  sessionStorage.removeItem(KEY);
}

/** An answer that was not 2xx, with the server's `{error, code}`. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function headers(tokenValue, json) {
  const result = { Accept: 'application/json' };
  if (tokenValue) result.Authorization = `Bearer ${tokenValue}`;
  if (json) result['Content-Type'] = 'application/json';
  return result;
}

async function failure(response) {
  let code = `http_${response.status}`;
  let message = `${response.status} ${response.statusText}`.trim();
  try {
    const body = await response.json();
    if (body && body.error) ({ error: message, code } = body);
  } catch {
    // Not JSON (a proxy's page): the status line says enough.
  }
  return new ApiError(response.status, code, message);
}

async function send(method, path, body, tokenValue = token()) {
  let response;
  try {
    response = await fetch(BASE + path, {
      method,
      headers: headers(tokenValue, body !== undefined),
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      credentials: 'omit',
    });
  } catch (error) {
    throw new ApiError(0, 'unreachable', `The server did not answer (${error.message}).`);
  }
  if (!response.ok) throw await failure(response);
  return response;
}

/** An answer's JSON, its numbers as written (results keep their digits). */
async function read(response) {
  return parseExact(await response.text());
}

/** GET `path` (under /v1/codeq) as JSON. */
export async function get(path, tokenValue) {
  return read(await send('GET', path, undefined, tokenValue));
}

/** POST `body` to `path` and read the JSON answer. */
export async function post(path, body = {}) {
  return read(await send('POST', path, body));
}

/** PUT `body` to `path` and read the JSON answer. */
export async function put(path, body) {
  return read(await send('PUT', path, body));
}

/** The bytes at `path`, fetched with the token (for downloads). */
export async function blob(path) {
  return (await send('GET', path)).blob();
}

/** `name` made safe for a path segment. */
export function seg(name) {
  return encodeURIComponent(name);
}

/** A query string from the fields that are set. */
export function query(fields) {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(fields)) {
    if (value !== null && value !== undefined && value !== '') params.set(name, value);
  }
  const text = params.toString();
  return text ? `?${text}` : '';
}
