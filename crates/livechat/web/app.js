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
//
// Who is here: the socket asks for presence (`presence=1`): a snapshot first, then at most one
// change a second, applied as set operations; joins and leaves of others are quiet lines in the
// timeline, and "… is typing" shows under it (the page sends `{"typing": true}` at most every 2 s
// while its user types, when it has a name). Screen readers: the timeline is a log that is not
// read out (history would be, all of it, on load); new live messages, joins and leaves go to a
// polite live region of their own, as do the member count and the typing line.
'use strict';

const ROOM_PATTERN = /^[A-Za-z0-9_-]{1,94}$/;
const FIRST_PAGE = 100;
/** The server's message size limit (bytes of a WebSocket frame), from the page's meta tag; the
 * server's default, 1 MiB, when the tag is absent or not a positive number. */
const MAX_MESSAGE_BYTES = (() => {
  const limit = Number(document.querySelector('meta[name="livechat-max-message-bytes"]')?.content);
  return Number.isSafeInteger(limit) && limit > 0 ? limit : 1048576;
})();
const RETRY_FIRST_MS = 500;
const RETRY_MAX_MS = 5000;
/** What the timeline holds while following live messages: past it the oldest go (the DOM and the
 * set of seen ids stay this size; "Load older messages" brings them back, up to MAX_SHOWN). */
const MAX_LIVE_SHOWN = 500;
const MAX_SHOWN = 2000;
/** Nonces of messages shown, remembered to drop a resent copy: the newest this many. */
const MAX_NONCES = 1000;
/** Names the member list shows; the others are counted ("and 800 more"). */
const MAX_MEMBERS_SHOWN = 200;
/** Typing is sent at most this often while the user types, and shown this long after the last. */
const TYPING_EVERY_MS = 2000;
const TYPING_SHOWN_MS = 3000;

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

/** The room in the address (`/r/{room}`): null at `/`, undefined when it cannot be decoded. */
function roomFromPath() {
  const match = location.pathname.match(/^\/r\/([^/]+)\/?$/);
  if (!match) return null;
  try {
    return decodeURIComponent(match[1]);
  } catch {
    return undefined; // e.g. /r/%E0: not UTF-8.
  }
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
    // Empty: the room the placeholder offers.
    const room = input.value.trim() || input.placeholder;
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

/** Rooms with people in them, and rooms with messages whoever is there. */
async function listRooms() {
  let rooms = [];
  let recent = [];
  try {
    const response = await api('/chat/rooms/');
    if (response.ok) ({ rooms = [], recent = [] } = await response.json());
  } catch {
    // Not reachable: both lists say there is nothing to show.
  }
  const link = (room, label) => {
    const item = document.createElement('li');
    const anchor = document.createElement('a');
    anchor.href = `/r/${encodeURIComponent(room)}`;
    anchor.textContent = label;
    item.append(anchor);
    return item;
  };
  $('room-list').replaceChildren(...rooms.map(({ room, members }) => link(room, `${room} (${members})`)));
  $('no-rooms').hidden = rooms.length > 0;
  $('recent-list').replaceChildren(...recent.map(({ room, ts }) => {
    const item = link(room, room);
    item.querySelector('a').title = `Last message ${formatWhen(new Date(ts))}`;
    return item;
  }));
  $('no-recent').hidden = recent.length > 0;
}

/** A message's time: the time alone today, with the date before. */
function formatWhen(when, now = new Date()) {
  if (Number.isNaN(when.getTime())) return '';
  const time = when.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  if (when.toDateString() === now.toDateString()) return time;
  return `${formatDay(when, now)} ${time}`;
}

/** A day as a separator says it: Today, Yesterday, or the date. */
function formatDay(when, now = new Date()) {
  const yesterday = new Date(now);
  yesterday.setDate(now.getDate() - 1);
  if (when.toDateString() === now.toDateString()) return 'Today';
  if (when.toDateString() === yesterday.toDateString()) return 'Yesterday';
  const sameYear = when.getFullYear() === now.getFullYear();
  return when.toLocaleDateString([], {
    weekday: 'short', day: 'numeric', month: 'short', ...(sameYear ? {} : { year: 'numeric' }),
  });
}

// ---- room view ------------------------------------------------------------------------

/** What tells users apart: a token's id, else a chosen name (anonymous: null). */
function userKey(user) {
  if (user?.id) return `i:${user.id}`;
  if (user?.name) return `n:${user.name}`;
  return null;
}

function displayName(user) {
  return user?.name || user?.id || 'anonymous';
}

/** "Ada", "Ada and Bo", "Ada, Bo and 3 others". */
function nameList(users) {
  const names = users.map(displayName);
  if (names.length <= 2) return names.join(' and ');
  const others = names.length - 2;
  return `${names.slice(0, 2).join(', ')} and ${others} other${others === 1 ? '' : 's'}`;
}

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
    this.nonceOrder = [];
    /** key -> { id, name, connections }: the people in the room; `members`: its connections. */
    this.members = new Map();
    this.memberCount = 0;
    /** key -> { user, timer }: who is typing now. */
    this.typists = new Map();
    this.typingSentAt = 0;
    /** Live messages that came while the tab was hidden. */
    this.unread = 0;
  }

  start() {
    $('chat').hidden = false;
    const title = $('room-title');
    title.hidden = false;
    title.textContent = this.room;
    this.updateTitle();
    this.wireComposer();
    this.log.addEventListener('scroll', () => {
      if (this.nearBottom()) $('jump').hidden = true;
    });
    $('jump').addEventListener('click', () => this.scrollToEnd());
    $('older').addEventListener('click', () => this.loadOlder());
    document.addEventListener('visibilitychange', () => {
      if (!document.hidden && this.unread) {
        this.unread = 0;
        this.updateTitle();
      }
    });
    this.updateEmpty();
    $('message-input').focus();
    this.begin();
  }

  updateTitle() {
    const unread = this.unread ? `(${this.unread}) ` : '';
    document.title = `${unread}#${this.room} · livechat`;
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
    let page = null;
    try {
      page = response?.ok ? await response.json() : null;
    } catch {
      // A truncated answer: asked again below.
    }
    if (!page) {
      // Down, cannot read its store, or cut short: ask again, as a lost connection would. The
      // socket waits for the history, so that it resumes right after it.
      setStatus('reconnecting', 'Reconnecting…');
      this.retryTimer = setTimeout(() => this.begin(), this.nextRetry());
      return;
    }
    this.showHistory(page);
    $('older').hidden = !(page.more || (page.chat_history?.length ?? 0) >= FIRST_PAGE);
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
    for (const message of page ?? []) this.add(message, { batch: true });
    this.redoDays();
    this.updateEmpty();
  }

  /** The page of messages before the oldest shown, keeping the reader's place. */
  async loadOlder() {
    const first = this.log.querySelector('li[data-id]');
    const button = $('older');
    if (!first) return;
    button.disabled = true;
    try {
      const response = await api(historyUrl(this.room, `before=${first.dataset.id}&limit=${FIRST_PAGE}`));
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const page = await response.json();
      const height = this.log.scrollHeight;
      for (const message of page.chat_history ?? []) this.add(message, { batch: true });
      this.redoDays();
      this.log.scrollTop += this.log.scrollHeight - height;
      const shown = this.log.querySelectorAll('li[data-id]').length;
      button.hidden = !(page.more || (page.chat_history?.length ?? 0) >= FIRST_PAGE) || shown >= MAX_SHOWN;
    } catch {
      this.notify('Could not load older messages; try again.');
    } finally {
      button.disabled = false;
    }
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
    const params = new URLSearchParams({ meta: '1', presence: '1', since: String(this.lastId) });
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
    } else if (frame.event === 'presence') {
      this.presence(frame);
    } else if (frame.event === 'typing') {
      this.typing(frame.user);
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
      this.add(frame, { live: this.caughtUp });
    }
  }

  /** A snapshot (`users`) replaces the list; a change (`joined`, `left`) is applied to it, and
   * others' comings and goings are told quietly in the timeline. */
  presence({ members, users, joined, left, truncated }) {
    if (typeof members === 'number') this.memberCount = members;
    if (Array.isArray(users)) {
      this.members = new Map(users.filter(userKey).map((user) => [userKey(user), user]));
    } else {
      const came = [];
      const went = [];
      for (const user of Array.isArray(joined) ? joined : []) {
        const key = userKey(user);
        if (!key || this.members.has(key)) continue;
        this.members.set(key, { ...user, connections: 1 });
        if (!this.isMine(user)) came.push(user);
      }
      for (const user of Array.isArray(left) ? left : []) {
        const key = userKey(user);
        if (!key || !this.members.delete(key)) continue;
        if (!this.isMine(user)) went.push(user);
        this.stopTyping(key);
      }
      for (const [users, verb] of [[came, 'joined'], [went, 'left']]) {
        if (!users.length) continue;
        const text = `${nameList(users)} ${verb}`;
        this.note(text, this.lastId + 0.5, 'presence');
        this.announce(text);
      }
      if (truncated) this.reloadMembers();
    }
    this.renderMembers();
  }

  /** Too many changed at once to be listed: the list is read again. */
  async reloadMembers() {
    try {
      const response = await api(`/chat/presence/?room=${encodeURIComponent(this.room)}`);
      if (response.ok) this.presence(await response.json());
    } catch {
      // The next change or reconnect brings a fresh list.
    }
  }

  renderMembers() {
    const people = [...this.members.values()].sort((a, b) => {
      const mine = Number(this.isMine(b)) - Number(this.isMine(a));
      return mine || displayName(a).localeCompare(displayName(b));
    });
    const items = people.slice(0, MAX_MEMBERS_SHOWN).map((user) => {
      const item = document.createElement('li');
      item.textContent = displayName(user);
      if (this.isMine(user)) {
        item.classList.add('me');
        item.append(' (you)');
      }
      if (user.connections > 1) item.title = `${user.connections} connections`;
      return item;
    });
    $('member-list').replaceChildren(...items);
    const more = $('more-members');
    more.hidden = people.length <= MAX_MEMBERS_SHOWN;
    more.textContent = `and ${people.length - MAX_MEMBERS_SHOWN} more`;
    const counted = `${people.length} ${people.length === 1 ? 'person' : 'people'}`;
    const plural = this.memberCount === 1 ? 'connection' : 'connections';
    const connections = this.memberCount > people.length ? `, ${this.memberCount} ${plural}` : '';
    $('people-count').textContent = `(${counted}${connections})`;
  }

  /** Someone else is typing: shown for a few seconds, or until their message comes. */
  typing(user) {
    const key = userKey(user);
    if (!key || this.isMine(user)) return;
    clearTimeout(this.typists.get(key)?.timer);
    const timer = setTimeout(() => this.stopTyping(key), TYPING_SHOWN_MS);
    this.typists.set(key, { user, timer });
    this.renderTyping();
  }

  stopTyping(key) {
    const typist = this.typists.get(key);
    if (!typist) return;
    clearTimeout(typist.timer);
    this.typists.delete(key);
    this.renderTyping();
  }

  renderTyping() {
    const users = [...this.typists.values()].map(({ user }) => user);
    let text = '';
    if (users.length === 1) text = `${displayName(users[0])} is typing…`;
    else if (users.length === 2) text = `${nameList(users)} are typing…`;
    else if (users.length > 2) text = 'Several people are typing…';
    $('typing').textContent = text;
  }

  /** While its user types: `{"typing": true}`, at most every TYPING_EVERY_MS, when it has a
   * name (the server refuses anonymous typing). */
  sendTyping() {
    const now = Date.now();
    if (!TOKEN && !this.me.name) return;
    if (!this.caughtUp || now - this.typingSentAt < TYPING_EVERY_MS) return;
    if (this.socket?.readyState !== WebSocket.OPEN) return;
    this.socket.send(JSON.stringify({ typing: true }));
    this.typingSentAt = now;
  }

  /** Read out once by screen readers. */
  announce(text) {
    $('announcer').textContent = text.length > 200 ? `${text.slice(0, 200)}…` : text;
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
    this.nonceOrder = [];
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
  note(text, key, kind = 'history') {
    const stick = this.nearBottom();
    const item = document.createElement('li');
    item.className = `event ${kind}`;
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

  add({ id, ts, message, user, nonce }, { live = false, batch = false } = {}) {
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
    if (typeof nonce === 'string') this.rememberNonce(nonce);
    const stick = this.nearBottom();

    const item = document.createElement('li');
    item.dataset.id = String(id);
    const time = document.createElement('time');
    const when = new Date(ts);
    if (!Number.isNaN(when.getTime())) {
      time.dateTime = when.toISOString();
      time.textContent = formatWhen(when);
      time.title = when.toLocaleString();
      item.dataset.day = when.toDateString();
    }
    const text = document.createElement('p');
    text.className = 'text';
    // Text, never HTML: whatever a message holds is shown as characters.
    text.textContent = typeof message === 'string' ? message : JSON.stringify(message);
    item.append(this.author(user), time, text);
    const mine = this.isMine(user);
    if (mine) item.classList.add('mine');
    // Id order, also when a late history page meets newer live frames.
    this.place(item, id);
    this.stopTyping(userKey(user));
    if (batch) return;

    if (live && !mine) {
      this.announce(`${displayName(user)}: ${text.textContent}`);
      if (document.hidden) {
        this.unread += 1;
        this.updateTitle();
      }
    }
    this.trim(stick);
    this.redoDays();
    this.updateEmpty();
    if (stick) this.scrollToEnd();
    else $('jump').hidden = false;
  }

  rememberNonce(nonce) {
    this.seenNonces.add(nonce);
    this.nonceOrder.push(nonce);
    if (this.nonceOrder.length > MAX_NONCES) this.seenNonces.delete(this.nonceOrder.shift());
  }

  /** Following live messages, the timeline keeps the newest MAX_LIVE_SHOWN (MAX_SHOWN while the
   * reader is scrolled up in older ones): the oldest go, with their ids. */
  trim(following) {
    const messages = this.log.querySelectorAll('li[data-id]');
    const keep = following ? MAX_LIVE_SHOWN : MAX_SHOWN;
    if (messages.length <= keep) return;
    const last = messages[messages.length - keep - 1];
    while (this.log.firstElementChild) {
      const item = this.log.firstElementChild;
      if (item.dataset.id) this.seen.delete(Number(item.dataset.id));
      item.remove();
      if (item === last) break;
    }
    $('older').hidden = false;
  }

  /** One separator before the first message of each day. */
  redoDays() {
    let day = null;
    for (const item of [...this.log.children]) {
      if (item.classList.contains('day')) {
        item.remove();
      } else if (item.dataset.day && item.dataset.day !== day) {
        day = item.dataset.day;
        const separator = document.createElement('li');
        separator.className = 'day';
        separator.setAttribute('role', 'separator');
        separator.textContent = formatDay(new Date(day));
        separator.dataset.key = String(Number(item.dataset.key) - 0.25);
        this.log.insertBefore(separator, item);
      }
    }
  }

  updateEmpty() {
    $('empty').hidden = Boolean(this.log.querySelector('li[data-id], li.pending'));
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
    this.updateEmpty();
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
      this.fitComposer();
      input.focus();
    }
    this.composerError(reason);
  }

  composerError(reason) {
    const error = $('composer-error');
    error.textContent = reason;
    error.hidden = !reason;
  }

  /** The composer grows with its text, up to its CSS max-height (then it scrolls). */
  fitComposer() {
    const input = $('message-input');
    input.style.height = 'auto';
    input.style.height = `${input.scrollHeight + 2}px`;
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
      this.fitComposer();
      input.focus();
    });
    input.addEventListener('input', () => {
      this.fitComposer();
      if (input.value.trim()) this.sendTyping();
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

const room = roomFromPath();
if (room === null) {
  showPicker();
} else if (room === undefined || !ROOM_PATTERN.test(room)) {
  const shown = room === undefined ? 'That address' : `“${room}”`;
  showPicker(`${shown} is not a room name: use letters, digits, _ and -, 1 to 94 characters.`);
} else {
  new RoomView(room).start();
}

// For the page's tests: the formatting of times, with a chosen "now".
window.livechatPage = { formatWhen, formatDay };
