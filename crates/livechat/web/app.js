// livechat page: pick a room at `/`, chat at `/r/{room}`. Plain JavaScript, no framework.
//
// The room view shows recent history, then live messages over a WebSocket with `?meta=1`, so
// every frame carries its id and author. It connects with `since=` the last id it has (and the
// room's epoch), so the server sends whatever it missed, then live messages: nothing is missing,
// nothing doubled; `gap` and `reset` events are told to the user in plain words. Each message is
// sent with a nonce and shown at once as pending; its echo confirms it, and pending ones are sent
// again (same nonce: stored once) after a reconnect. A message the server refuses goes back into
// the composer with the reason.
//
// Identity: on a server with auth required, the page takes a token from its URL fragment
// (`/r/lobby#token=...`), keeps it for this tab only (sessionStorage), removes it from the address
// bar, and sends it to this server alone (`?token=` on the WebSocket, a Bearer header on fetches).
// With auth off, the user picks a name, remembered in localStorage and sent as `?name=`.
'use strict';

const ROOM_PATTERN = /^[A-Za-z0-9_-]{1,94}$/;
const FIRST_PAGE = 100;
/** The server's message size limit, from the page's meta tag (1 MiB if absent). */
const MAX_MESSAGE_BYTES = Number(
  document.querySelector('meta[name="livechat-max-message-bytes"]')?.content) || 1048576;
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

function roomFromPath() {
  const match = location.pathname.match(/^\/r\/([^/]+)\/?$/);
  return match ? decodeURIComponent(match[1]) : null;
}

function historyUrl(room, query) {
  return `/chat/history/?room=${encodeURIComponent(room)}&${query}`;
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
    const room = input.value.trim();
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

async function listRooms() {
  const list = $('room-list');
  try {
    const response = await api('/chat/rooms/');
    if (!response.ok) return;
    const { rooms } = await response.json();
    for (const { room, members } of rooms) {
      const item = document.createElement('li');
      const link = document.createElement('a');
      link.href = `/r/${encodeURIComponent(room)}`;
      link.textContent = `${room} (${members})`;
      item.append(link);
      list.append(item);
    }
    $('no-rooms').hidden = rooms.length > 0;
  } catch {
    $('no-rooms').hidden = false;
  }
}

// ---- room view ------------------------------------------------------------------------

class RoomView {
  constructor(room) {
    this.room = room;
    this.lastId = 0;
    this.epoch = null;
    this.seen = new Set();
    /** nonce -> { text, item }: sent (or to send), not yet echoed. */
    this.pending = new Map();
    this.socket = null;
    this.retryMs = RETRY_FIRST_MS;
    this.log = $('log');
    this.me = { id: TOKEN ? tokenSubject(TOKEN) : null, name: localStorage.getItem(NAME_KEY) ?? '' };
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
    this.checkAccess();
  }

  // A WebSocket cannot read the handshake's status, so a history request asks first whether
  // this server wants a token, and whether ours is good for this room.
  async checkAccess() {
    let status;
    try {
      status = (await api(historyUrl(this.room, 'limit=0'))).status;
    } catch {
      status = 0;
    }
    if (status === 401) {
      this.stop(TOKEN
        ? 'Your sign-in link is invalid or has expired. Ask for a new one.'
        : 'This chat needs a sign-in link (it ends in #token=...). Ask whoever runs it for one.');
      return;
    }
    if (status === 403) {
      this.stop(`Your sign-in link does not give access to #${this.room}.`);
      return;
    }
    if (!TOKEN) this.wireName();
    // Recent history first; the socket then resumes right after it.
    try {
      await this.loadRecent();
    } catch {
      // Connecting with since=0 replays what there is.
    }
    this.connect();
  }

  async loadRecent() {
    const response = await api(historyUrl(this.room, `limit=${FIRST_PAGE}`));
    if (!response.ok) throw new Error(`history: HTTP ${response.status}`);
    const { chat_history: page, epoch } = await response.json();
    this.epoch = epoch ?? null;
    for (const message of page) this.add(message);
    if (page.length === 0) this.lastId = Math.max(this.lastId, 0);
  }

  /** Stops for good, saying why (the server refused us; retrying would not help). */
  stop(reason) {
    this.stopped = true;
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
      // The name is part of the connection: connect again under the new one.
      const previous = this.socket;
      this.connect();
      previous?.close(1000, 'name changed');
    });
  }

  connect() {
    setStatus(this.socket ? 'reconnecting' : 'connecting', this.socket ? 'Reconnecting…' : 'Connecting…');
    this.setSendable(false);
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const params = new URLSearchParams({ meta: '1', since: String(this.lastId) });
    if (this.epoch) params.set('epoch', this.epoch);
    if (TOKEN) params.set('token', TOKEN);
    else if (this.me.name) params.set('name', this.me.name);
    const url = `${scheme}://${location.host}/ws/chat/${encodeURIComponent(this.room)}/?${params}`;
    const socket = new WebSocket(url);
    this.socket = socket;
    socket.addEventListener('open', () => {
      this.retryMs = RETRY_FIRST_MS;
    });
    socket.addEventListener('message', (event) => this.receive(event.data));
    socket.addEventListener('close', (event) => {
      if (socket !== this.socket || this.stopped) return;
      if (event.code === 4001) {
        this.stop('Your session has expired. Open a new sign-in link to go on.');
        return;
      }
      if (event.code === 1009) {
        this.refuse(`Too long: the server takes at most ${MAX_MESSAGE_BYTES} bytes.`);
      }
      setStatus('reconnecting', 'Reconnecting…');
      setTimeout(() => this.connect(), this.retryMs);
      this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
    });
  }

  receive(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (frame.event === 'caught_up') {
      this.epoch = frame.epoch;
      this.lastId = Math.max(this.lastId, frame.id);
      setStatus('connected', 'Connected');
      this.setSendable(true);
      for (const [nonce, { text }] of this.pending) this.transmit(nonce, text);
    } else if (frame.event === 'gap') {
      const count = frame.to - frame.from + 1;
      this.note(`${count} older message${count === 1 ? ' is' : 's are'} no longer available.`);
    } else if (frame.event === 'reset') {
      this.reset(frame);
    } else if (typeof frame.error === 'string') {
      if (typeof frame.retry_after_ms === 'number') {
        this.notify(`Sending too fast: trying again in ${Math.ceil(frame.retry_after_ms / 1000)} s.`);
        setTimeout(() => this.resendPending(), frame.retry_after_ms);
      } else {
        this.refuse(frame.error);
      }
    } else if (typeof frame.id === 'number') {
      this.add(frame);
    }
  }

  /** The room's history is not the one shown (the server lost it): start again from its own. */
  reset({ last, epoch }) {
    for (const item of [...this.log.querySelectorAll('li[data-id]')]) item.remove();
    this.seen.clear();
    this.lastId = last;
    this.epoch = epoch;
    this.note('This room’s history was reset on the server: earlier messages are gone.');
    this.loadRecent().catch(() => {});
  }

  /** A quiet line in the timeline (not a message). */
  note(text) {
    const item = document.createElement('li');
    item.className = 'event';
    item.dataset.id = String(this.lastId);
    item.textContent = text;
    this.log.append(item);
    if (this.nearBottom()) this.scrollToEnd();
  }

  add({ id, ts, message, user, nonce }) {
    if (nonce && this.pending.has(nonce)) {
      this.pending.get(nonce).item.remove();
      this.pending.delete(nonce);
    }
    if (this.seen.has(id)) return;
    this.seen.add(id);
    this.lastId = Math.max(this.lastId, id);
    const stick = this.nearBottom();

    const item = document.createElement('li');
    item.dataset.id = String(id);
    const time = document.createElement('time');
    const when = new Date(ts);
    time.dateTime = when.toISOString();
    time.textContent = when.toLocaleTimeString();
    const text = document.createElement('p');
    text.className = 'text';
    // Text, never HTML: whatever a message holds is shown as characters.
    text.textContent = typeof message === 'string' ? message : JSON.stringify(message);
    item.append(this.author(user), time, text);
    if (this.isMine(user)) item.classList.add('mine');

    // Keep id order when a late history page meets newer live frames; pending ones stay last.
    let next = null;
    for (let other = this.log.lastElementChild; other; other = other.previousElementSibling) {
      if (!other.classList.contains('pending') && Number(other.dataset.id) < id) break;
      next = other;
    }
    this.log.insertBefore(item, next);

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
  post(text) {
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
    this.pending.set(nonce, { text, item });
    if (this.socket?.readyState === WebSocket.OPEN) this.transmit(nonce, text);
  }

  transmit(nonce, text) {
    this.socket?.send(JSON.stringify({ message: text, nonce }));
  }

  resendPending() {
    if (this.socket?.readyState !== WebSocket.OPEN) return;
    for (const [nonce, { text }] of this.pending) this.transmit(nonce, text);
  }

  /** The server refused a message: the oldest pending one goes back into the composer. */
  refuse(reason) {
    const oldest = this.pending.entries().next().value;
    if (oldest) {
      const [nonce, { text, item }] = oldest;
      item.remove();
      this.pending.delete(nonce);
      $('message-input').value = text;
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
      const text = input.value;
      if (!text.trim()) return;
      const frame = JSON.stringify({ message: text, nonce: newNonce() });
      const bytes = new TextEncoder().encode(frame).length;
      if (bytes > MAX_MESSAGE_BYTES) {
        this.composerError(`Too long to send: ${bytes} bytes, the server takes at most ${MAX_MESSAGE_BYTES}.`);
        input.focus();
        return;
      }
      this.composerError('');
      this.post(text);
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

/** A nonce for one message: a UUID (random bytes where randomUUID is missing). */
function newNonce() {
  if (crypto.randomUUID) return crypto.randomUUID();
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join('');
}

// ---- start ----------------------------------------------------------------------------

const room = roomFromPath();
if (room === null) {
  showPicker();
} else if (!ROOM_PATTERN.test(room)) {
  showPicker(`“${room}” is not a room name: use letters, digits, _ and -, 1 to 94 characters.`);
} else {
  new RoomView(room).start();
}
