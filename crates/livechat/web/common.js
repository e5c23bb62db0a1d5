// What every part of the page shares: who the user is (token or chosen name), this server's
// limits from the page's meta tags, fetch() to this server, and how names and times are written.

export const ROOM_PATTERN = /^(?:[A-Za-z0-9_-]{1,94}|dm:[A-Za-z0-9_.@+-]{1,40}:[A-Za-z0-9_.@+-]{1,40})$/;
export const DEFAULT_ROOM = 'lobby';

/** The server's message size limit (bytes of a WebSocket frame), from the page's meta tag; the
 * server's default, 1 MiB, when the tag is absent or not a positive number. */
export const MAX_MESSAGE_BYTES = (() => {
  const limit = Number(document.querySelector('meta[name="livechat-max-message-bytes"]')?.content);
  return Number.isSafeInteger(limit) && limit > 0 ? limit : 1048576;
})();
/** Whether this server lets the page read history (`LIVECHAT_HISTORY_READS`): when it does
 * not, the page follows rooms live only, without history or resume. */
export const HISTORY_OPEN = (document.querySelector('meta[name="livechat-history"]')?.content ?? 'open') === 'open';

const TOKEN_KEY = 'livechat-token';
const NAME_KEY = 'livechat-name';
export const MAX_NAME = 64;

export const $ = (id) => document.getElementById(id);

/** The token from the fragment (then dropped from the address bar), or the tab's saved one. */
function takeToken() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const token = fragment.get('token');
  if (token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    history.replaceState(null, '', location.pathname + location.search);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

/** What a token says about its user (the server checks the signature; the page only needs to
 * tell its own messages apart and whether to offer a moderator's actions). */
function tokenClaims(token) {
  try {
    const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(payload)) ?? {};
  } catch {
    return {};
  }
}

export const TOKEN = takeToken();
const CLAIMS = TOKEN ? tokenClaims(TOKEN) : {};

/** This page's user: a token's id (and whether it moderates), or a chosen name (auth off). */
export const me = {
  id: typeof CLAIMS.sub === 'string' ? CLAIMS.sub : (typeof CLAIMS.sub === 'number' ? String(CLAIMS.sub) : null),
  name: TOKEN ? (CLAIMS.name ?? '') : (localStorage.getItem(NAME_KEY) ?? ''),
  moderator: CLAIMS.moderate === true,
  /** Known to the server as someone: a token, or a chosen name. */
  get named() {
    return Boolean(TOKEN || this.name);
  },
  /** Saves the chosen name (auth off). */
  rename(name) {
    this.name = name;
    if (name) localStorage.setItem(NAME_KEY, name);
    else localStorage.removeItem(NAME_KEY);
  },
};

/** fetch() to this server as this user: the token as a Bearer header, or `name=` in the query
 * (auth off) when `named` (read positions and `me` in reactions belong to a name). */
export function api(url, { method = 'GET', body, named = false } = {}) {
  let target = url;
  if (named && !TOKEN && me.name) {
    target += `${url.includes('?') ? '&' : '?'}name=${encodeURIComponent(me.name)}`;
  }
  const headers = {};
  if (TOKEN) headers.Authorization = `Bearer ${TOKEN}`;
  const init = { method, headers };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  return fetch(target, init);
}

/** The JSON of an answer, or null. */
export async function jsonOf(response) {
  try {
    return await response.json();
  } catch {
    return null;
  }
}

export function setStatus(state, text) {
  const status = $('status');
  status.dataset.state = state;
  status.textContent = text;
}

/** Where a room is shown: `/r/{room}`. */
export function roomHref(room) {
  return `/r/${encodeURIComponent(room)}`;
}

/** The other user of a direct-message room `dm:A:B` (null for other rooms). */
export function dmPartner(room) {
  const match = /^dm:([^:]+):([^:]+)$/.exec(room);
  if (!match) return null;
  return match[1] === me.id ? match[2] : match[1];
}

/** A room as people read it: `#lobby`, or `@bob` for a direct-message room. */
export function roomLabel(room) {
  const partner = dmPartner(room);
  return partner === null ? `#${room}` : `@${partner}`;
}

/** What tells users apart, as the server does: a token's id, else a chosen name; null for an
 * anonymous connection. */
export function userKey(user) {
  if (user?.id) return `i:${user.id}`;
  if (user?.name) return `n:${user.name}`;
  return null;
}

export function displayName(user) {
  return user?.name || user?.id || 'anonymous';
}

export const numberFormat = new Intl.NumberFormat();
export const collator = new Intl.Collator(undefined, { sensitivity: 'base', numeric: true });

/** "Alice", "Alice and Bob", "Alice, Bob and Carol", "Alice, Bob and 3 others". */
export function listNames(names) {
  if (names.length <= 1) return names.join('');
  if (names.length <= 3) return `${names.slice(0, -1).join(', ')} and ${names[names.length - 1]}`;
  return `${names.slice(0, 2).join(', ')} and ${numberFormat.format(names.length - 2)} others`;
}

export function plural(count, one, many) {
  return `${numberFormat.format(count)} ${count === 1 ? one : many}`;
}

const timeFormat = new Intl.DateTimeFormat(undefined, { timeStyle: 'short' });
const dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
const dayFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'full' });
export const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'medium' });
const relativeFormat = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });

/** Calendar days from `date` to `now`, in local time (0: today; negative: a clock ahead). */
function daysBefore(date, now) {
  const start = (d) => new Date(d.getFullYear(), d.getMonth(), d.getDate()).getTime();
  return Math.round((start(now) - start(date)) / 86_400_000);
}

/** A message's time: the time alone today, date and time before. */
export function formatStamp(date, now = new Date()) {
  return daysBefore(date, now) <= 0 ? timeFormat.format(date) : dateTimeFormat.format(date);
}

/** A day separator's words: "Today", "Yesterday", else the full date. */
export function dayLabel(date, now = new Date()) {
  const days = daysBefore(date, now);
  if (days <= 0) return 'Today';
  if (days === 1) return 'Yesterday';
  return dayFormat.format(date);
}

export function localDay(date) {
  return `${date.getFullYear()}-${date.getMonth() + 1}-${date.getDate()}`;
}

/** "3 minutes ago", "yesterday", for the picker's recent rooms. */
export function ago(ts, now = Date.now()) {
  const seconds = Math.round((ts - now) / 1000);
  for (const [unit, size] of [['day', 86400], ['hour', 3600], ['minute', 60]]) {
    if (Math.abs(seconds) >= size) return relativeFormat.format(Math.round(seconds / size), unit);
  }
  return 'just now';
}

/** "until Tuesday, 3 December 2026 at 14:00", or "until a moderator lifts it" (no end). */
export function untilText(until) {
  return typeof until === 'number' ? `until ${fullFormat.format(new Date(until))}` : 'until a moderator lifts it';
}

/** A button with a visible text, and a label for assistive technology when it needs more. */
export function button(text, { label, className, action } = {}) {
  const element = document.createElement('button');
  element.type = 'button';
  element.textContent = text;
  if (label) element.setAttribute('aria-label', label);
  if (className) element.className = className;
  if (action) element.dataset.action = action;
  return element;
}
