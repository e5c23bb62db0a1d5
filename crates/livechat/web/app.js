// livechat page: pick a room at `/`, chat at `/r/{room}`. Plain JavaScript, no framework.
//
// The room view reads recent history over HTTP, then connects a WebSocket with `?meta=1` (every
// frame carries its id and author) and `since=` the last id it has, with the room's epoch: the
// server sends whatever was published since, then live messages, so nothing is missing and
// nothing doubled; it does the same after every reconnect. `gap` (some messages are gone) and
// `reset` (the room's history started again: ids restart) are told in the timeline in plain
// words. Each message is sent with a nonce and shown at once as pending; the stored copy coming
// back (same nonce) confirms it, and pending ones are sent again (same nonce: stored once) after
// a reconnect. Nothing is shown twice (by id and by nonce). A message over the server's size
// limit (its meta tag) is not sent; one the server refuses anyway goes back into the composer
// with the reason; one refused for its rate waits and goes again.
//
// Identity: on a server with auth required, the page takes a token from its URL fragment
// (`/r/lobby#token=...`), keeps it for this tab only (sessionStorage), removes it from the address
// bar, and sends it to this server alone (`?token=` on the WebSocket, a Bearer header on fetches).
// With auth off, the user picks a name, remembered in localStorage and sent as `?name=`.
'use strict';

const ROOM_PATTERN = /^[A-Za-z0-9_-]{1,94}$/;
const DEFAULT_ROOM = 'lobby';
const FIRST_PAGE = 100;
/** The server's message size limit (bytes of a WebSocket frame), from the page's meta tag; the
 * server's default, 1 MiB, when the tag is absent or not a positive number. */
const MAX_MESSAGE_BYTES = (() => {
  const limit = Number(document.querySelector('meta[name="livechat-max-message-bytes"]')?.content);
  return Number.isSafeInteger(limit) && limit > 0 ? limit : 1048576;
})();
const RETRY_FIRST_MS = 500;
const RETRY_MAX_MS = 5000;

const TOKEN_KEY = 'livechat-token';
const NAME_KEY = 'livechat-name';
const MAX_NAME = 64;

const $ = (id) => document.getElementById(id);

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

/** The `sub` of a token, to tell one's own messages apart (the server checks the signature). */
function tokenSubject(token) {
  try {
    const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(payload)).sub ?? null;
  } catch {
    return null;
  }
}

const TOKEN = takeToken();

/** fetch() to this server, with the token when there is one. */
function api(url) {
  return fetch(url, TOKEN ? { headers: { Authorization: `Bearer ${TOKEN}` } } : {});
}

function setStatus(state, text) {
  const status = $('status');
  status.dataset.state = state;
  status.textContent = text;
}

/** `{ room }` from `/r/{room}` (`room: null` elsewhere), or `{ undecodable }`: the path's
 * segment when it is not valid percent-encoded UTF-8 (`/r/%E0`). */
function roomFromPath() {
  const match = location.pathname.match(/^\/r\/([^/]+)\/?$/);
  if (!match) return { room: null };
  try {
    return { room: decodeURIComponent(match[1]) };
  } catch {
    return { room: null, undecodable: match[1] };
  }
}

function historyUrl(room, query) {
  return `/chat/history/?room=${encodeURIComponent(room)}&${query}`;
}

const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'medium' });
const relativeFormat = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });

/** "3 minutes ago", "yesterday", for the picker's recent rooms. */
function ago(ts, now = Date.now()) {
  const seconds = Math.round((ts - now) / 1000);
  for (const [unit, size] of [['day', 86400], ['hour', 3600], ['minute', 60]]) {
    if (Math.abs(seconds) >= size) return relativeFormat.format(Math.round(seconds / size), unit);
  }
  return 'just now';
}

// ---- room picker ----------------------------------------------------------------------

async function showPicker(problem) {
  $('picker').hidden = false;
  document.title = 'livechat';
  const input = $('room-input');
  const hint = $('room-hint');
  if (problem) {
    hint.textContent = problem;
    hint.classList.add('invalid');
  }
  $('pick-form').addEventListener('submit', (event) => {
    event.preventDefault();
    // Nothing typed: the room the placeholder names.
    const room = input.value.trim() || DEFAULT_ROOM;
    if (!ROOM_PATTERN.test(room)) {
      hint.textContent = 'Use letters, digits, _ and - only, 1 to 94 characters.';
      hint.classList.add('invalid');
      input.setAttribute('aria-invalid', 'true');
      input.focus();
      return;
    }
    location.assign(`/r/${room}`);
  });
  input.focus();
  await listRooms();
}

/** Links to the active rooms (with their member counts) and to those written lately. */
async function listRooms() {
  let rooms = [];
  let recent = [];
  try {
    const response = await api('/chat/rooms/');
    if (response.ok) {
      const answer = await response.json();
      rooms = Array.isArray(answer.rooms) ? answer.rooms : [];
      // `recent` is newer than `rooms`: an older server leaves it out.
      recent = Array.isArray(answer.recent) ? answer.recent : [];
    }
  } catch {
    // Not reachable: no lists, the form still works.
  }
  const roomLink = (room, text) => {
    const link = document.createElement('a');
    link.href = `/r/${encodeURIComponent(room)}`;
    link.textContent = text;
    const item = document.createElement('li');
    item.append(link);
    return item;
  };
  $('room-list').replaceChildren(...rooms.map(({ room, members }) => roomLink(room, `${room} (${members})`)));
  $('no-rooms').hidden = rooms.length > 0;
  // Rooms with people in them are listed above already.
  const active = new Set(rooms.map(({ room }) => room));
  const quiet = recent.filter(({ room }) => typeof room === 'string' && !active.has(room));
  $('recent-list').replaceChildren(...quiet.map(({ room, ts }) => {
    const item = roomLink(room, room);
    if (typeof ts === 'number') {
      const when = document.createElement('time');
      when.dateTime = new Date(ts).toISOString();
      when.textContent = ago(ts);
      when.title = `Last message: ${fullFormat.format(new Date(ts))}`;
      item.firstChild.append(' ', when);
    }
    return item;
  }));
  $('recent').hidden = quiet.length === 0;
}

// ---- room view ------------------------------------------------------------------------

class RoomView {
  constructor(room) {
    this.room = room;
    /** The last id shown (or skipped by a gap), and the epoch it counts in: where to resume. */
    this.lastId = 0;
    this.epoch = null;
    /** Ids and nonces of the messages shown: nothing is shown twice. */
    this.seen = new Set();
    this.seenNonces = new Set();
    /** nonce -> { text, item, sentOn }: written here, not yet echoed by the server. */
    this.pending = new Map();
    this.socket = null;
    /** The current socket has sent its replay (`caught_up`): it is live. */
    this.caughtUp = false;
    this.retryMs = RETRY_FIRST_MS;
    this.retryTimer = null;
    this.resendTimer = null;
    this.log = $('log');
    this.me = { id: TOKEN ? tokenSubject(TOKEN) : null, name: localStorage.getItem(NAME_KEY) ?? '' };
    this.named = false;
    this.stopped = false;
  }

  start() {
    $('chat').hidden = false;
    const title = $('room-title');
    title.hidden = false;
    title.textContent = this.room;
    document.title = `#${this.room} · livechat`;
    this.wireComposer();
    this.log.addEventListener('scroll', () => {
      if (this.nearBottom()) $('jump').hidden = true;
    });
    $('jump').addEventListener('click', () => this.scrollToEnd());
    this.begin();
  }

  // Recent history over HTTP first, then the socket resumes right after its last id: nothing
  // published in between is missed. The same request tells (a WebSocket cannot read the
  // handshake's status) whether this server wants a token, and whether ours is good here.
  async begin() {
    setStatus('connecting', 'Connecting…');
    let response = null;
    try {
      response = await api(historyUrl(this.room, `limit=${FIRST_PAGE}`));
    } catch {
      // The server is not reachable: try again below.
    }
    if (response?.status === 401) {
      this.stop(TOKEN
        ? 'Your sign-in link is invalid or has expired. Ask for a new one.'
        : 'This chat needs a sign-in link (it ends in #token=...). Ask whoever runs it for one.');
      return;
    }
    if (response?.status === 403) {
      this.stop(`Your sign-in link does not give access to #${this.room}.`);
      return;
    }
    if (!TOKEN && !this.named) this.wireName();
    this.named = true;
    if (!response?.ok) {
      // Down, or cannot read its store: ask again, as a lost connection would.
      setStatus('reconnecting', 'Reconnecting…');
      this.retryTimer = setTimeout(() => this.begin(), this.nextRetry());
      return;
    }
    try {
      this.showHistory(await response.json());
    } catch {
      // A truncated answer: the socket's replay (from whatever id we have) fills in.
    }
    this.connect();
  }

  /** Recent history again (after a reset). */
  async loadRecent() {
    const response = await api(historyUrl(this.room, `limit=${FIRST_PAGE}`));
    if (!response.ok) throw new Error(`history: HTTP ${response.status}`);
    this.showHistory(await response.json());
  }

  showHistory({ chat_history: page, epoch }) {
    if (epoch) this.epoch = epoch;
    for (const message of page ?? []) this.add(message);
  }

  nextRetry() {
    const wait = this.retryMs;
    this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
    return wait;
  }

  /** Stops for good, saying why (the server refused us; retrying would not help). */
  stop(reason) {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.resendTimer);
    setStatus('stopped', 'Not connected');
    $('send-button').disabled = true;
    const notice = $('access');
    notice.textContent = reason;
    notice.hidden = false;
  }

  wireName() {
    const form = $('name-form');
    const input = $('name-input');
    form.hidden = false;
    input.value = this.me.name;
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      const name = input.value.trim().slice(0, MAX_NAME);
      input.value = name;
      if (name === this.me.name) return;
      this.me.name = name;
      if (name) localStorage.setItem(NAME_KEY, name);
      else localStorage.removeItem(NAME_KEY);
      // The name is part of the connection: connect again under the new one (once connecting).
      if (this.socket) this.connect();
    });
  }

  connect() {
    if (this.stopped) return;
    clearTimeout(this.retryTimer);
    const previous = this.socket;
    setStatus(previous ? 'reconnecting' : 'connecting', previous ? 'Reconnecting…' : 'Connecting…');
    this.caughtUp = false;
    this.setSendable(false);
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const params = new URLSearchParams({ meta: '1', since: String(this.lastId) });
    if (this.epoch) params.set('epoch', this.epoch);
    if (TOKEN) params.set('token', TOKEN);
    else if (this.me.name) params.set('name', this.me.name);
    const url = `${scheme}://${location.host}/ws/chat/${encodeURIComponent(this.room)}/?${params}`;
    const socket = new WebSocket(url);
    this.socket = socket;
    // Whatever the old socket still says is ignored from now on: the new one resumes from our
    // last id, so it sends again anything the old one had not delivered.
    if (previous && previous.readyState <= WebSocket.OPEN) previous.close(1000, 'reconnecting');
    socket.addEventListener('message', (event) => {
      if (socket === this.socket) this.receive(event.data);
    });
    socket.addEventListener('close', (event) => {
      if (socket !== this.socket || this.stopped) return;
      this.caughtUp = false;
      if (event.code === 4001) {
        this.stop('Your session has expired. Open a new sign-in link to go on.');
        return;
      }
      if (event.code === 1009) this.refuseTooLarge(socket);
      setStatus('reconnecting', 'Reconnecting…');
      this.setSendable(false);
      this.retryTimer = setTimeout(() => this.connect(), this.nextRetry());
    });
  }

  receive(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (frame === null || typeof frame !== 'object') return;
    if (frame.event === 'caught_up') {
      if (frame.epoch) this.epoch = frame.epoch;
      if (typeof frame.id === 'number') this.lastId = Math.max(this.lastId, frame.id);
      this.caughtUp = true;
      this.retryMs = RETRY_FIRST_MS;
      setStatus('connected', 'Connected');
      this.setSendable(true);
      this.flushPending(false);
    } else if (frame.event === 'gap') {
      this.gap(frame);
    } else if (frame.event === 'reset') {
      this.reset(frame);
    } else if (typeof frame.error === 'string') {
      if (typeof frame.retry_after_ms === 'number') {
        const seconds = Math.max(1, Math.ceil(frame.retry_after_ms / 1000));
        this.notify(`Sending too fast: your message goes out again in ${seconds} s.`);
        this.scheduleResend(frame.retry_after_ms);
      } else {
        this.refuse(`Not sent: ${frame.error}`);
      }
    } else if (typeof frame.id === 'number') {
      this.add(frame);
    }
  }

  /** Ids `from..to` will not come: said plainly, where they would have been. */
  gap({ from, to }) {
    if (typeof from !== 'number' || typeof to !== 'number' || to < from) return;
    const count = to - from + 1;
    this.note(count === 1
      ? `An older message (${from}) is no longer available.`
      : `Some older messages (${from}–${to}, ${count} in all) are no longer available.`, from - 0.5);
    this.lastId = Math.max(this.lastId, to);
  }

  /** The room's history is not the one shown (the server lost or reset it): ids start again. */
  reset({ last, epoch }) {
    const live = this.caughtUp;
    for (const item of [...this.log.children]) {
      if (!item.classList.contains('pending')) item.remove();
    }
    this.seen.clear();
    this.seenNonces.clear();
    this.lastId = typeof last === 'number' ? last : 0;
    if (epoch) this.epoch = epoch;
    this.note('This room’s history was reset on the server: the earlier messages are gone. '
      + 'Showing the room as it is now.', 0.5);
    this.loadRecent().then(() => {
      // A message sent just before a reset while connected may be lost with it: send the
      // pending ones again (stored once, by their nonces).
      if (live && this.caughtUp) this.flushPending(true);
    }).catch(() => {
      this.notify('Could not reload this room’s history; new messages still show.');
    });
  }

  /** A quiet line in the timeline (not a message), after the messages with ids below `key`. */
  note(text, key) {
    const stick = this.nearBottom();
    const item = document.createElement('li');
    item.className = 'event';
    item.textContent = text;
    this.place(item, key);
    if (stick) this.scrollToEnd();
  }

  /** Inserts in id order (`key`); pending messages stay last. */
  place(item, key) {
    item.dataset.key = String(key);
    let next = null;
    for (let other = this.log.lastElementChild; other; other = other.previousElementSibling) {
      if (!other.classList.contains('pending') && Number(other.dataset.key) <= key) break;
      next = other;
    }
    this.log.insertBefore(item, next);
  }

  add({ id, ts, message, user, nonce }) {
    if (typeof nonce === 'string') {
      // Ours came back: the pending copy gives way to the stored one.
      const waiting = this.pending.get(nonce);
      if (waiting) {
        waiting.item.remove();
        this.pending.delete(nonce);
      }
    }
    this.lastId = Math.max(this.lastId, id);
    if (this.seen.has(id) || (typeof nonce === 'string' && this.seenNonces.has(nonce))) return;
    this.seen.add(id);
    if (typeof nonce === 'string') this.seenNonces.add(nonce);
    const stick = this.nearBottom();

    const item = document.createElement('li');
    item.dataset.id = String(id);
    const time = document.createElement('time');
    const when = new Date(ts);
    if (!Number.isNaN(when.getTime())) {
      time.dateTime = when.toISOString();
      time.textContent = when.toLocaleTimeString();
    }
    const text = document.createElement('p');
    text.className = 'text';
    // Text, never HTML: whatever a message holds is shown as characters.
    text.textContent = typeof message === 'string' ? message : JSON.stringify(message);
    item.append(this.author(user), time, text);
    if (this.isMine(user)) item.classList.add('mine');
    // Id order, also when a late history page meets newer live frames.
    this.place(item, id);

    if (stick) this.scrollToEnd();
    else $('jump').hidden = false;
  }

  /** Who wrote it: a verified name (from a token), a name the sender chose, or nobody. */
  author(user) {
    const author = document.createElement('span');
    author.className = 'author';
    if (user?.id) {
      author.textContent = user.name || user.id;
      author.title = `Signed in as ${user.id}`;
    } else if (user?.name) {
      author.textContent = `${user.name} (unverified)`;
      author.classList.add('chosen');
      author.title = 'A name the sender chose; anyone can pick any name.';
    } else {
      author.textContent = 'anonymous';
      author.classList.add('chosen');
    }
    return author;
  }

  isMine(user) {
    if (this.me.id) return user?.id === this.me.id;
    return Boolean(this.me.name) && !user?.id && user?.name === this.me.name;
  }

  nearBottom() {
    return this.log.scrollHeight - this.log.scrollTop - this.log.clientHeight < 48;
  }

  scrollToEnd() {
    this.log.scrollTop = this.log.scrollHeight;
    $('jump').hidden = true;
  }

  notify(text) {
    const notice = $('notice');
    notice.textContent = text;
    notice.hidden = false;
    clearTimeout(this.noticeTimer);
    this.noticeTimer = setTimeout(() => { notice.hidden = true; }, 6000);
  }

  setSendable(sendable) {
    $('message-input').dataset.connected = String(sendable);
  }

  /** Shows a message at once as pending, and sends it now or once connected. */
  post(text, bytes) {
    const nonce = newNonce();
    const item = document.createElement('li');
    item.className = 'pending mine';
    item.dataset.nonce = nonce;
    const state = document.createElement('span');
    state.className = 'author';
    state.textContent = 'sending…';
    const body = document.createElement('p');
    body.className = 'text';
    body.textContent = text;
    item.append(state, body);
    this.log.append(item);
    this.scrollToEnd();
    this.pending.set(nonce, { text, item, bytes, sentOn: null });
    this.transmit(nonce);
  }

  /** Sends a pending message on the current socket, if it is open (else after the reconnect). */
  transmit(nonce) {
    const entry = this.pending.get(nonce);
    const socket = this.socket;
    if (!entry || socket?.readyState !== WebSocket.OPEN) return;
    socket.send(JSON.stringify({ message: entry.text, nonce }));
    entry.sentOn = socket;
  }

  /** Sends the pending messages: those not sent on this socket yet, or all (`again`). */
  flushPending(again) {
    for (const [nonce, entry] of this.pending) {
      if (again || entry.sentOn !== this.socket) this.transmit(nonce);
    }
  }

  /** Once the rate limit allows it, the pending messages go out again (one timer at a time). */
  scheduleResend(ms) {
    if (this.resendTimer !== null) return;
    this.resendTimer = setTimeout(() => {
      this.resendTimer = null;
      if (this.caughtUp) this.flushPending(true);
    }, Math.max(0, ms));
  }

  /** The server refused a message: it goes back into the composer, with the reason. Error
   * frames do not say which message they answer; publishes are answered in order, so it is the
   * oldest one still pending on this socket. */
  refuse(reason) {
    let refused = null;
    for (const entry of this.pending) {
      if (entry[1].sentOn === this.socket) {
        refused = entry;
        break;
      }
    }
    this.giveBack(refused ?? this.pending.entries().next().value, reason);
  }

  /** The server closed with 1009: the largest message sent on that socket was over its limit. */
  refuseTooLarge(socket) {
    let largest = null;
    for (const entry of this.pending) {
      if (entry[1].sentOn === socket && (!largest || entry[1].bytes > largest[1].bytes)) largest = entry;
    }
    this.giveBack(largest, 'Too long: the server refused this message as over its size limit.');
  }

  giveBack(entry, reason) {
    if (entry) {
      const [nonce, { text, item }] = entry;
      item.remove();
      this.pending.delete(nonce);
      const input = $('message-input');
      // Never lost: whatever was typed since stays, after the refused text.
      input.value = input.value.trim() ? `${text}\n${input.value}` : text;
      input.focus();
    }
    this.composerError(reason);
  }

  composerError(reason) {
    const error = $('composer-error');
    error.textContent = reason;
    error.hidden = !reason;
  }

  wireComposer() {
    const form = $('send-form');
    const input = $('message-input');
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      if (this.stopped) return;
      const text = input.value;
      if (!text.trim()) return;
      // The frame as it will be sent (a nonce is always 36 characters), in UTF-8 bytes.
      const bytes = new TextEncoder().encode(JSON.stringify({ message: text, nonce: newNonce() })).length;
      if (bytes > MAX_MESSAGE_BYTES) {
        this.composerError(`Too long to send: ${bytes} bytes, the server takes at most ${MAX_MESSAGE_BYTES}. `
          + 'Shorten it, or split it in several messages.');
        input.focus();
        return;
      }
      this.composerError('');
      this.post(text, bytes);
      input.value = '';
      input.focus();
    });
    input.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        form.requestSubmit();
      }
    });
  }
}

/** A nonce for one message: a UUID v4 (crypto.randomUUID exists only in secure contexts; the
 * same from random bytes elsewhere). */
function newNonce() {
  if (typeof crypto.randomUUID === 'function') return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

// ---- start ----------------------------------------------------------------------------

const { room, undecodable } = roomFromPath();
if (undecodable !== undefined) {
  showPicker(`“/r/${undecodable}” is not a room address (it is not valid percent-encoded text). `
    + 'Pick a room below.');
} else if (room === null) {
  showPicker();
} else if (!ROOM_PATTERN.test(room)) {
  showPicker(`“${room}” is not a room name: use letters, digits, _ and -, 1 to 94 characters.`);
} else {
  new RoomView(room).start();
}
