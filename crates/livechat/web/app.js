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
// with the reason; one refused for its rate waits and goes again. When the first history read
// fails, the page follows the room live all the same and reads the history again (backing off)
// until it has it, merging by id.
//
// Who is here: the socket also asks for `presence=1`: a snapshot of the room's people, then at
// most one change a second (joined and left, applied as set operations), and "typing" events.
// The page lists the people (its own user first), tells joins and leaves quietly in the
// timeline, and says who is typing; it tells the room when its user types (at most every 2 s).
//
// Bounded: the timeline holds the newest MAX_MESSAGES messages while it follows the room (the
// oldest go; "Load older messages" brings them back), up to MAX_MESSAGES_READING while its user
// reads older ones (past that the newest give way, until "Show newest messages"); the people
// list at most MAX_PEOPLE_SHOWN names; the ids and nonces remembered are those on screen.
//
// Identity: on a server with auth required, the page takes a token from its URL fragment
// (`/r/lobby#token=...`), keeps it for this tab only (sessionStorage), removes it from the address
// bar, and sends it to this server alone (`?token=` on the WebSocket, a Bearer header on fetches).
// With auth off, the user picks a name, remembered in localStorage and sent as `?name=`.
'use strict';

const ROOM_PATTERN = /^[A-Za-z0-9_-]{1,94}$/;
const DEFAULT_ROOM = 'lobby';
const FIRST_PAGE = 100;
const OLDER_PAGE = 100;
/** Most messages in the timeline's DOM (and so in the sets of ids and nonces seen, and of
 * nonces sent from this tab) while it follows the room: past it the oldest are dropped. 500
 * keeps a long-lived tab light and still holds five pages of history. */
const MAX_MESSAGES = 500;
/** The same while the user reads older messages (paged in with "Load older messages"): past it
 * the newest are dropped, until "Show newest messages"; back at the end, 500 again. */
const MAX_MESSAGES_READING = 2000;
/** Most join/leave lines kept in the timeline (a quiet room where people come and go for days
 * would otherwise grow without messages to push them out). */
const MAX_PRESENCE_NOTES = 50;
/** Most names in the people list's DOM; the others are "and N more". A screen of names is all
 * anyone reads, and a room of thousands stays cheap to redraw (at most once a second). */
const MAX_PEOPLE_SHOWN = 200;
/** Most entries kept in the screen-reader announcer (read once, then only clutter). */
const MAX_ANNOUNCED = 5;
/** The longest text read out for one message. */
const MAX_ANNOUNCED_CHARS = 300;
/** `{"typing": true}` goes out at most this often. The server passes one per user per 2 s and
 * absorbs the others: a little over 2 s, so that a frame arriving a few ms early is not lost. */
const TYPING_SEND_EVERY_MS = 2200;
/** How long "… is typing" stays after the last typing event. */
const TYPING_SHOWN_MS = 3000;
/** Joins and leaves within this long of the last line (with nothing said since) join it. */
const NOTE_MERGE_MS = 60_000;
/** The server's message size limit (bytes of a WebSocket frame), from the page's meta tag; the
 * server's default, 1 MiB, when the tag is absent or not a positive number. */
const MAX_MESSAGE_BYTES = (() => {
  const limit = Number(document.querySelector('meta[name="livechat-max-message-bytes"]')?.content);
  return Number.isSafeInteger(limit) && limit > 0 ? limit : 1048576;
})();
/** Whether this server lets the page read history (`LIVECHAT_HISTORY_READS`): when it does
 * not, the page follows rooms live only, without history or resume. */
const HISTORY_OPEN = (document.querySelector('meta[name="livechat-history"]')?.content ?? 'open') === 'open';
const RETRY_FIRST_MS = 500;
const RETRY_MAX_MS = 5000;
const HISTORY_RETRY_MAX_MS = 30_000;

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

// ---- people and times -----------------------------------------------------------------

/** What tells users apart, as the server does: a token's id, else a chosen name; null for an
 * anonymous connection. */
function userKey(user) {
  if (user?.id) return `i:${user.id}`;
  if (user?.name) return `n:${user.name}`;
  return null;
}

function displayName(user) {
  return user?.name || user?.id || 'anonymous';
}

const numberFormat = new Intl.NumberFormat();
const collator = new Intl.Collator(undefined, { sensitivity: 'base', numeric: true });

/** "Alice", "Alice and Bob", "Alice, Bob and Carol", "Alice, Bob and 3 others". */
function listNames(names) {
  if (names.length <= 1) return names.join('');
  if (names.length <= 3) return `${names.slice(0, -1).join(', ')} and ${names[names.length - 1]}`;
  return `${names.slice(0, 2).join(', ')} and ${numberFormat.format(names.length - 2)} others`;
}

function plural(count, one, many) {
  return `${numberFormat.format(count)} ${count === 1 ? one : many}`;
}

const timeFormat = new Intl.DateTimeFormat(undefined, { timeStyle: 'short' });
const dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
const dayFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'full' });
const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'medium' });
const relativeFormat = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });

/** Calendar days from `date` to `now`, in local time (0: today; negative: a clock ahead). */
function daysBefore(date, now) {
  const start = (d) => new Date(d.getFullYear(), d.getMonth(), d.getDate()).getTime();
  return Math.round((start(now) - start(date)) / 86_400_000);
}

/** A message's time: the time alone today, date and time before. */
function formatStamp(date, now = new Date()) {
  return daysBefore(date, now) <= 0 ? timeFormat.format(date) : dateTimeFormat.format(date);
}

/** A day separator's words: "Today", "Yesterday", else the full date. */
function dayLabel(date, now = new Date()) {
  const days = daysBefore(date, now);
  if (days <= 0) return 'Today';
  if (days === 1) return 'Yesterday';
  return dayFormat.format(date);
}

function localDay(date) {
  return `${date.getFullYear()}-${date.getMonth() + 1}-${date.getDate()}`;
}

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
    /** Ids and nonces of the messages in the timeline (no more: see MAX_MESSAGES). */
    this.seen = new Set();
    this.seenNonces = new Set();
    this.messageCount = 0;
    /** nonce -> { text, item, sentOn }: written here, not yet echoed by the server. */
    this.pending = new Map();
    /** Nonces of the messages written in this tab (the last MAX_MESSAGES): ours even when
     * anonymous. */
    this.sentNonces = new Set();
    this.socket = null;
    /** The current socket resumes with `since`, and has sent its replay (`caught_up`). */
    this.resuming = false;
    this.caughtUp = false;
    this.retryMs = RETRY_FIRST_MS;
    this.retryTimer = null;
    this.resendTimer = null;
    /** The room's latest history has been read (else the page reads it again, backing off). */
    this.historyLoaded = false;
    this.historyRetryMs = RETRY_FIRST_MS;
    this.historyTimer = null;
    /** After a reset: send the pending messages again once the history is back. */
    this.resendAfterReload = false;
    /** Older messages than the first shown exist; the newest are not shown (paging back). */
    this.hasOlder = false;
    this.loadingOlder = false;
    /** Older pages were read in (MAX_MESSAGES_READING holds until the end is in view again). */
    this.reading = false;
    this.detached = false;
    this.scroller = $('scroller');
    this.log = $('log');
    this.me = { id: TOKEN ? tokenSubject(TOKEN) : null, name: localStorage.getItem(NAME_KEY) ?? '' };
    /** Every key this page's user had here (a name changed is still us leaving). */
    this.myKeys = new Set();
    this.rememberMe();
    /** Whether the current socket speaks under a name (typing needs one). */
    this.socketNamed = false;
    /** key -> { id, name }: the room's named users; `members` counts connections. */
    this.people = new Map();
    this.members = 0;
    this.peopleTruncated = false;
    /** Presence changes held while the full list is read again. */
    this.presenceHeld = null;
    /** key -> { name, until }: who is typing, until when. */
    this.typing = new Map();
    this.typingTimer = null;
    this.lastTypingSent = 0;
    this.typingLater = null;
    /** The last join/leave line, while later ones may join it; all of them, oldest first. */
    this.lastNote = null;
    this.presenceNotes = new Set();
    this.unread = 0;
    this.named = false;
    this.stopped = false;
    /** A "Sending too fast" notice is up until a message goes through. */
    this.rateLimited = false;
  }

  start() {
    $('chat').hidden = false;
    const title = $('room-title');
    title.hidden = false;
    title.textContent = this.room;
    this.updateTitle();
    // The saved name at once (the form shows once the server says names are in use).
    $('name-input').value = this.me.name;
    this.wireComposer();
    this.wirePeople();
    this.scroller.addEventListener('scroll', () => {
      if (!this.nearBottom() || this.detached) return;
      $('jump').hidden = true;
      if (this.reading) this.follow();
    });
    $('jump').addEventListener('click', () => {
      if (this.detached) this.showNewest();
      this.scrollToEnd();
    });
    $('older').addEventListener('click', () => this.loadOlder());
    document.addEventListener('visibilitychange', () => {
      if (!document.hidden) {
        this.unread = 0;
        this.updateTitle();
      }
    });
    this.scheduleMidnight();
    $('message-input').focus();
    this.begin();
  }

  updateTitle() {
    const base = `#${this.room} · livechat`;
    document.title = this.unread > 0 ? `(${this.unread}) ${base}` : base;
  }

  // Recent history over HTTP first, then the socket resumes right after its last id: nothing
  // published in between is missed. The same request tells (a WebSocket cannot read the
  // handshake's status) whether this server wants a token, and whether ours is good here. When
  // it fails otherwise, the socket follows the room live anyway and the history is read again
  // until it comes (merged by id: the socket opened first, so nothing falls in between).
  async begin() {
    setStatus('connecting', 'Connecting…');
    if (!HISTORY_OPEN) {
      this.note('Earlier messages are not shown on this server: you see what is said from now on.', 0.5);
      if (!TOKEN) this.wireName();
      this.named = true;
      this.connect();
      return;
    }
    const outcome = await this.readLatest();
    if (outcome === 'denied') return;
    if (!TOKEN && !this.named) this.wireName();
    this.named = true;
    this.connect();
    if (outcome === 'failed') this.retryHistory();
  }

  /** Reads the latest page of history and shows it: 'ok', 'denied' (stopped) or 'failed'. */
  async readLatest() {
    let response = null;
    try {
      response = await api(historyUrl(this.room, `limit=${FIRST_PAGE}`));
    } catch {
      return 'failed';
    }
    if (this.stopped) return 'denied';
    if (response.status === 401) {
      this.stop(TOKEN
        ? 'Your sign-in link is invalid or has expired. Ask for a new one.'
        : 'This chat needs a sign-in link (it ends in #token=...). Ask whoever runs it for one.');
      return 'denied';
    }
    if (response.status === 403) {
      this.stop(`Your sign-in link does not give access to #${this.room}.`);
      return 'denied';
    }
    if (!response.ok) return 'failed';
    let answer;
    try {
      answer = await response.json();
    } catch {
      return 'failed';
    }
    this.showLatest(answer);
    return 'ok';
  }

  /** The latest history again, until it comes (after a failure, a reset, or "Show newest"). */
  async reloadLatest() {
    if (!HISTORY_OPEN) return;
    clearTimeout(this.historyTimer);
    this.historyTimer = null;
    const outcome = await this.readLatest();
    if (outcome === 'failed') this.retryHistory();
  }

  retryHistory() {
    if (this.stopped || this.historyTimer !== null) return;
    const wait = this.historyRetryMs;
    this.historyRetryMs = Math.min(this.historyRetryMs * 2, HISTORY_RETRY_MAX_MS);
    this.historyTimer = setTimeout(() => {
      this.historyTimer = null;
      this.reloadLatest();
    }, wait);
  }

  showLatest({ chat_history: page, epoch, more }) {
    if (epoch) this.epoch = epoch;
    const messages = Array.isArray(page) ? page : [];
    const first = !this.historyLoaded;
    this.historyLoaded = true;
    this.historyRetryMs = RETRY_FIRST_MS;
    const stick = first || this.nearBottom();
    for (const message of messages) this.add(message, 'history');
    if (messages.length >= FIRST_PAGE || more) this.hasOlder = true;
    this.settle('history', stick);
    if (this.resendAfterReload) {
      this.resendAfterReload = false;
      if (this.caughtUp) this.flushPending(true);
    }
  }

  /** The wait before the next reconnect: doubling from RETRY_FIRST_MS to RETRY_MAX_MS, each
   * drawn at random from half to one and a half times that, so that the clients of a node that
   * went away (a restart, a deploy) come back spread over time, not all at once on the others. */
  nextRetry() {
    const wait = this.retryMs;
    this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
    return wait / 2 + Math.random() * wait;
  }

  /** Stops for good, saying why (the server refused us; retrying would not help). */
  stop(reason) {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.resendTimer);
    clearTimeout(this.historyTimer);
    setStatus('stopped', 'Not connected');
    $('send-button').disabled = true;
    // Who was here is not known any more: the list would only mislead.
    this.people = new Map();
    this.members = 0;
    this.clearTyping();
    $('people-list').replaceChildren();
    $('people-more').hidden = true;
    $('people-count').textContent = 'Not connected: who is here is not known';
    const notice = $('access');
    notice.textContent = reason;
    notice.hidden = false;
  }

  ownKey() {
    return userKey(this.me.id ? { id: this.me.id } : { name: this.me.name });
  }

  rememberMe() {
    const key = this.ownKey();
    if (key) this.myKeys.add(key);
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
      this.rememberMe();
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
    this.clearTyping();
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const params = new URLSearchParams({ meta: '1', presence: '1' });
    // Resume from what is shown. With no history read yet and nothing received, there is
    // nothing to resume from: live messages only, the history is read meanwhile.
    this.resuming = HISTORY_OPEN && (this.historyLoaded || this.lastId > 0);
    if (this.resuming) {
      params.set('since', String(this.lastId));
      if (this.epoch) params.set('epoch', this.epoch);
    }
    if (TOKEN) params.set('token', TOKEN);
    else if (this.me.name) params.set('name', this.me.name);
    this.socketNamed = Boolean(TOKEN || this.me.name);
    const url = `${scheme}://${location.host}/ws/chat/${encodeURIComponent(this.room)}/?${params}`;
    const socket = new WebSocket(url);
    this.socket = socket;
    // Whatever the old socket still says is ignored from now on: the new one resumes from our
    // last id, so it sends again anything the old one had not delivered.
    if (previous && previous.readyState <= WebSocket.OPEN) previous.close(1000, 'reconnecting');
    socket.addEventListener('open', () => {
      // Not resuming: no `caught_up` will come, the socket is live as soon as it is open.
      if (socket === this.socket && !this.resuming) this.live({});
    });
    socket.addEventListener('message', (event) => {
      if (socket === this.socket) this.receive(event.data);
    });
    socket.addEventListener('close', (event) => {
      if (socket !== this.socket || this.stopped) return;
      this.caughtUp = false;
      this.clearTyping();
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

  /** The socket is live: sent its replay (`caught_up`), or opened without one. */
  live({ epoch, id }) {
    if (epoch) this.epoch = epoch;
    if (typeof id === 'number') this.lastId = Math.max(this.lastId, id);
    this.caughtUp = true;
    this.retryMs = RETRY_FIRST_MS;
    setStatus('connected', 'Connected');
    this.setSendable(true);
    this.flushPending(false);
    this.refreshChrome();
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
      this.live(frame);
    } else if (frame.event === 'presence') {
      this.presence(frame);
    } else if (frame.event === 'typing') {
      this.someoneTyping(frame.user);
    } else if (frame.event === 'gap') {
      this.gap(frame);
    } else if (frame.event === 'reset') {
      this.reset(frame);
    } else if (frame.event === 'token') {
      // A refreshed token took (the page does not refresh tokens itself).
    } else if (typeof frame.error === 'string') {
      this.refused(frame);
    } else if (typeof frame.id === 'number') {
      const stick = this.nearBottom();
      const item = this.add(frame, 'live');
      this.settle('live', stick, item);
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
    this.clearTimeline();
    this.lastId = typeof last === 'number' ? last : 0;
    if (epoch) this.epoch = epoch;
    this.note('This room’s history was reset on the server: the earlier messages are gone. '
      + 'Showing the room as it is now.', 0.5);
    // A message sent just before a reset while connected may be lost with it: once the history
    // is back, the pending ones go again (stored once, by their nonces).
    this.resendAfterReload = live;
    this.reloadLatest();
  }

  /** Empties the timeline but for the pending messages. */
  clearTimeline() {
    for (const item of [...this.log.children]) {
      if (!item.classList.contains('pending')) item.remove();
    }
    this.seen.clear();
    this.seenNonces.clear();
    this.messageCount = 0;
    this.hasOlder = false;
    this.reading = false;
    this.detached = false;
    this.lastNote = null;
    this.presenceNotes.clear();
  }

  /** A quiet line in the timeline (not a message), after the messages with ids below `key`. */
  note(text, key) {
    const stick = this.nearBottom();
    const item = document.createElement('li');
    item.className = 'event';
    item.textContent = text;
    this.place(item, key);
    if (stick) this.scrollToEnd();
    return item;
  }

  /** Inserts in id order (`key`); pending messages stay last. */
  place(item, key) {
    item.dataset.key = String(key);
    const first = this.log.firstElementChild;
    if (first && !first.classList.contains('pending') && key < Number(first.dataset.key)) {
      // Before everything (a page of older messages, inserted newest first).
      this.log.insertBefore(item, first);
      return;
    }
    let next = null;
    for (let other = this.log.lastElementChild; other; other = other.previousElementSibling) {
      if (!other.classList.contains('pending') && Number(other.dataset.key) <= key) break;
      next = other;
    }
    this.log.insertBefore(item, next);
  }

  /** Shows a message (from `source`: 'history', 'older' or 'live') unless it is shown already;
   * the new element, or null. Call settle() after. */
  add({ id, ts, message, user, nonce }, source) {
    const ours = typeof nonce === 'string' && this.sentNonces.has(nonce);
    if (typeof nonce === 'string') {
      // Ours came back: the pending copy gives way to the stored one.
      const waiting = this.pending.get(nonce);
      if (waiting) {
        waiting.item.remove();
        this.pending.delete(nonce);
        // "Sending too fast" is old news once the resend went through.
        if (this.rateLimited) {
          this.rateLimited = false;
          this.hideNotice();
        }
      }
    }
    this.lastId = Math.max(this.lastId, id);
    if (source === 'live') this.stoppedTyping(userKey(user));
    if (this.seen.has(id) || (typeof nonce === 'string' && this.seenNonces.has(nonce))) return null;
    // Paged back: the newest are not on screen ("Show newest" reads them).
    if (this.detached && source === 'live') return null;
    this.seen.add(id);
    if (typeof nonce === 'string') this.seenNonces.add(nonce);
    this.messageCount += 1;

    const item = document.createElement('li');
    item.className = 'message';
    item.dataset.id = String(id);
    if (typeof nonce === 'string') item.dataset.nonce = nonce;
    const time = document.createElement('time');
    const when = new Date(ts);
    if (!Number.isNaN(when.getTime())) {
      item.dataset.ts = String(when.getTime());
      time.dateTime = when.toISOString();
      time.textContent = formatStamp(when);
      time.title = fullFormat.format(when);
    }
    const text = document.createElement('p');
    text.className = 'text';
    // Text, never HTML: whatever a message holds is shown as characters, but for http(s) links.
    text.append(...withLinks(typeof message === 'string' ? message : JSON.stringify(message)));
    const mine = ours || this.isMine(user);
    // The message itself; a day heading may go before it, in the same item.
    const body = document.createElement('div');
    body.className = 'body';
    body.append(this.author(user));
    if (mine) {
      item.classList.add('mine');
      const you = document.createElement('span');
      you.className = 'you';
      you.textContent = 'you';
      body.append(you);
    }
    body.append(time, text);
    item.append(body);
    // Id order, also when a late history page meets newer live frames.
    this.place(item, id);

    if (source === 'live' && !mine) {
      if (document.hidden) {
        this.unread += 1;
        this.updateTitle();
      }
      // Only what comes live is read out, never a replay or history.
      if (this.caughtUp) this.announce(`${displayName(user)}: ${text.textContent}`);
    }
    return item;
  }

  /** After adding: keeps the caps, the day separators, the empty and "older" states, and the
   * scroll position (at the end when it was there). */
  settle(source, stick, item = null) {
    if (source === 'older') {
      this.reading = true;
      this.trimNewest();
      this.fixAllDays();
    } else if (item) {
      // One message: only its neighbours' headings can change (and the new first one's).
      const trimmed = this.reading ? this.trimNewest() : this.trimOldest();
      this.fixDaysAround(item);
      if (trimmed) this.fixDaysAround(this.log.querySelector('li.message'));
    } else {
      if (this.reading) this.trimNewest();
      else this.trimOldest();
      this.fixAllDays();
    }
    this.refreshChrome();
    if (source === 'older') return;
    if (stick) this.scrollToEnd();
    else if (item || (source === 'live' && this.detached)) $('jump').hidden = false;
  }

  /** Over MAX_MESSAGES: the oldest messages go (with the lines above them); true if any did. */
  trimOldest() {
    let trimmed = false;
    while (this.messageCount > MAX_MESSAGES) {
      const first = this.log.firstElementChild;
      if (!first || first.classList.contains('pending')) break;
      this.drop(first);
      trimmed = true;
    }
    if (trimmed) this.hasOlder = true;
    return trimmed;
  }

  /** Over MAX_MESSAGES_READING while reading older messages: the newest go, until "Show
   * newest"; true if any did. */
  trimNewest() {
    let trimmed = false;
    while (this.messageCount > MAX_MESSAGES_READING) {
      let last = this.log.lastElementChild;
      while (last?.classList.contains('pending')) last = last.previousElementSibling;
      if (!last) break;
      this.drop(last);
      trimmed = true;
      this.detached = true;
    }
    if (this.detached) {
      $('jump').textContent = 'Show newest messages';
      $('jump').hidden = false;
    }
    return trimmed;
  }

  /** The end is in view again after reading older messages: back to the newest MAX_MESSAGES. */
  follow() {
    this.reading = false;
    if (this.trimOldest()) {
      this.fixDaysAround(this.log.querySelector('li.message'));
      this.refreshChrome();
      this.scrollToEnd();
    }
  }

  drop(item) {
    if (item.classList.contains('message')) {
      this.seen.delete(Number(item.dataset.id));
      if (item.dataset.nonce) this.seenNonces.delete(item.dataset.nonce);
      this.messageCount -= 1;
    }
    this.presenceNotes.delete(item);
    if (this.lastNote?.item === item) this.lastNote = null;
    item.remove();
  }

  /** Back from paging: the latest history again, following the room live. */
  showNewest() {
    this.clearTimeline();
    $('jump').textContent = 'New messages below';
    $('jump').hidden = true;
    this.historyLoaded = false;
    this.reloadLatest();
  }

  /** "Load older messages": the page before the first one shown, keeping what is in view. */
  async loadOlder() {
    if (this.loadingOlder) return;
    const button = $('older');
    const first = this.log.querySelector('li.message');
    const before = first ? Number(first.dataset.id) : this.lastId + 1;
    this.loadingOlder = true;
    button.setAttribute('aria-disabled', 'true');
    button.textContent = 'Loading older messages…';
    try {
      const response = await api(historyUrl(this.room, `before=${before}&limit=${OLDER_PAGE}`));
      if (!response.ok) throw new Error(`history: HTTP ${response.status}`);
      const { chat_history: page, more } = await response.json();
      const messages = Array.isArray(page) ? page : [];
      const fromEnd = this.scroller.scrollHeight - this.scroller.scrollTop;
      // Newest first, so that each goes straight to the top.
      for (const message of [...messages].reverse()) this.add(message, 'older');
      this.hasOlder = messages.length >= OLDER_PAGE || Boolean(more);
      this.settle('older', false);
      this.scroller.scrollTop = this.scroller.scrollHeight - fromEnd;
    } catch {
      this.notify('Could not load older messages. Try again in a moment.');
    } finally {
      this.loadingOlder = false;
      button.removeAttribute('aria-disabled');
      button.textContent = 'Load older messages';
      if (button.hidden && document.activeElement === document.body) this.scroller.focus();
    }
  }

  /** The pieces around the timeline that follow its content. */
  refreshChrome() {
    const ready = this.historyLoaded;
    const older = $('older');
    const hadFocus = document.activeElement === older;
    older.hidden = !this.hasOlder;
    if (hadFocus && older.hidden) this.scroller.focus();
    $('start').hidden = this.hasOlder || !ready || this.messageCount === 0;
    $('empty').hidden = !ready || this.messageCount > 0 || this.pending.size > 0;
  }

  // ---- day separators ----

  /** The message before `item` (not a line or a pending one), or null. */
  static messageBefore(item) {
    let other = item.previousElementSibling;
    while (other && !other.classList.contains('message')) other = other.previousElementSibling;
    return other;
  }

  static messageAfter(item) {
    let other = item.nextElementSibling;
    while (other && !other.classList.contains('message')) other = other.nextElementSibling;
    return other;
  }

  /** A day heading on `item` when its day is not the one of `previous` (a message or null). */
  static dayHeading(item, previous, now) {
    const ts = Number(item.dataset.ts);
    let heading = item.firstElementChild?.classList.contains('day') ? item.firstElementChild : null;
    if (!item.dataset.ts || Number.isNaN(ts)) {
      heading?.remove();
      return;
    }
    const date = new Date(ts);
    const day = localDay(date);
    const previousTs = previous?.dataset.ts ? Number(previous.dataset.ts) : NaN;
    if (!Number.isNaN(previousTs) && localDay(new Date(previousTs)) === day) {
      heading?.remove();
      return;
    }
    const label = dayLabel(date, now);
    if (heading?.textContent === label) return;
    if (!heading) {
      heading = document.createElement('h2');
      heading.className = 'day';
      item.prepend(heading);
    }
    heading.textContent = label;
  }

  fixDaysAround(item) {
    const now = new Date();
    if (!item?.classList.contains('message')) return;
    RoomView.dayHeading(item, RoomView.messageBefore(item), now);
    const next = RoomView.messageAfter(item);
    if (next) RoomView.dayHeading(next, item, now);
  }

  fixAllDays() {
    const now = new Date();
    let previous = null;
    for (const item of this.log.querySelectorAll('li.message')) {
      RoomView.dayHeading(item, previous, now);
      previous = item;
    }
  }

  /** At midnight "today" moves: the times and the day headings are written again. */
  scheduleMidnight() {
    const now = new Date();
    const next = new Date(now.getFullYear(), now.getMonth(), now.getDate() + 1, 0, 0, 1);
    setTimeout(() => {
      const today = new Date();
      for (const time of this.log.querySelectorAll('li.message > .body > time')) {
        const ts = Number(time.closest('li').dataset.ts);
        if (!Number.isNaN(ts)) time.textContent = formatStamp(new Date(ts), today);
      }
      this.fixAllDays();
      this.scheduleMidnight();
    }, next.getTime() - now.getTime());
  }

  // ---- people ----

  wirePeople() {
    // Open beside the timeline on a wide screen; one line (opened on demand) on a phone.
    const wide = matchMedia('(min-width: 48rem)');
    $('people-details').open = wide.matches;
    wide.addEventListener('change', () => { $('people-details').open = wide.matches; });
  }

  presence(frame) {
    if (Array.isArray(frame.users)) {
      this.presenceSnapshot(frame);
    } else if (this.presenceHeld) {
      this.presenceHeld.push(frame);
    } else {
      this.presenceChange(frame);
    }
  }

  /** Who is here (a socket's first frame, or the list read again): no joins or leaves told. */
  presenceSnapshot({ members, users, truncated }) {
    this.people = new Map();
    for (const user of users) {
      const key = userKey(user);
      if (key) this.people.set(key, { id: user.id, name: user.name });
    }
    if (typeof members === 'number') this.members = members;
    this.peopleTruncated = Boolean(truncated);
    // This page is one of the connections: its user is here, listed or cut off the list.
    const own = this.ownKey();
    if (own && !this.people.has(own)) this.people.set(own, { id: this.me.id, name: this.me.name || undefined });
    for (const key of this.typing.keys()) {
      if (!this.people.has(key) && !this.peopleTruncated) this.typing.delete(key);
    }
    this.renderPeople();
    this.renderTyping();
  }

  /** At most once a second: who joined and left (set operations: a joined one may be listed
   * already, a left one gone already), and the count of connections. */
  presenceChange({ members, joined, left, truncated }) {
    const arrived = [];
    const gone = [];
    for (const user of Array.isArray(joined) ? joined : []) {
      const key = userKey(user);
      if (!key || this.people.has(key)) continue;
      this.people.set(key, { id: user.id, name: user.name });
      arrived.push([key, displayName(user)]);
    }
    for (const user of Array.isArray(left) ? left : []) {
      const key = userKey(user);
      if (!key || !this.people.has(key)) continue;
      this.people.delete(key);
      this.typing.delete(key);
      gone.push([key, displayName(user)]);
    }
    if (typeof members === 'number') this.members = members;
    const others = ([key]) => !this.myKeys.has(key);
    this.noteComings(arrived.filter(others), gone.filter(others));
    this.renderPeople();
    this.renderTyping();
    // More joined or left than one event lists: the whole list again.
    if (truncated) this.refetchPeople();
  }

  async refetchPeople() {
    if (this.presenceHeld) return;
    this.presenceHeld = [];
    try {
      const response = await api(`/chat/presence/?room=${encodeURIComponent(this.room)}`);
      if (response.ok) this.presenceSnapshot(await response.json());
    } catch {
      // The next truncated change asks again; meanwhile the changes below still apply.
    }
    const held = this.presenceHeld;
    this.presenceHeld = null;
    for (const frame of held) this.presenceChange(frame);
  }

  renderPeople() {
    $('people').hidden = false;
    const own = this.ownKey();
    const others = [];
    for (const [key, user] of this.people) if (key !== own) others.push(user);
    others.sort((a, b) => collator.compare(displayName(a), displayName(b)));
    const items = [];
    if (own && this.people.has(own)) {
      const item = document.createElement('li');
      item.className = 'you';
      item.textContent = `${displayName(this.people.get(own))} (you)`;
      items.push(item);
    }
    for (const user of others.slice(0, MAX_PEOPLE_SHOWN - items.length)) {
      const item = document.createElement('li');
      item.textContent = displayName(user);
      if (!user.id) item.title = 'A name they chose';
      items.push(item);
    }
    $('people-list').replaceChildren(...items);
    const hidden = this.people.size - items.length;
    const parts = [];
    if (hidden > 0) parts.push(`and ${numberFormat.format(hidden)} more`);
    if (this.peopleTruncated) parts.push('and others: the server lists only the first 1,000');
    const more = $('people-more');
    more.textContent = parts.join('; ');
    more.hidden = parts.length === 0;
    $('people-anonymous').hidden = Boolean(own) || Boolean(TOKEN);
    // The polite summary changes only when the counts do: nothing read out twice.
    const count = $('people-count');
    const people = this.people.size;
    let who = plural(people, 'person', 'people');
    if (this.peopleTruncated) who = `${numberFormat.format(people)}+ people`;
    else if (people === 0) who = 'No one named';
    const text = `${who} here · ${plural(this.members, 'connection', 'connections')}`;
    if (count.textContent !== text) count.textContent = text;
    count.dataset.people = String(people);
    count.dataset.connections = String(this.members);
  }

  /** Joins and leaves as one quiet line (joined to the last one when nothing came since). */
  noteComings(arrived, gone) {
    if (arrived.length === 0 && gone.length === 0) return;
    if (this.detached) return;
    let last = this.lastNote;
    const lastShown = (() => {
      let item = this.log.lastElementChild;
      while (item?.classList.contains('pending')) item = item.previousElementSibling;
      return item;
    })();
    const fresh = last && last.item === lastShown && Date.now() - last.at < NOTE_MERGE_MS
      && ![...arrived, ...gone].some(([key]) => last.joined.has(key) || last.left.has(key));
    if (!fresh) {
      const item = this.note('', this.lastId + 0.5);
      item.classList.add('presence');
      last = { item, joined: new Map(), left: new Map(), at: 0 };
      this.lastNote = last;
      this.presenceNotes.add(item);
      if (this.presenceNotes.size > MAX_PRESENCE_NOTES) this.drop(this.presenceNotes.values().next().value);
    }
    for (const [key, name] of arrived) last.joined.set(key, name);
    for (const [key, name] of gone) last.left.set(key, name);
    // Read out politely, this change alone (the line may hold earlier ones too).
    const told = [];
    if (arrived.length) told.push(`${listNames(arrived.map(([, name]) => name))} joined`);
    if (gone.length) told.push(`${listNames(gone.map(([, name]) => name))} left`);
    this.announce(told.join('; '));
    last.at = Date.now();
    const parts = [];
    if (last.joined.size) parts.push(`${listNames([...last.joined.values()])} joined`);
    if (last.left.size) parts.push(`${listNames([...last.left.values()])} left`);
    last.item.textContent = parts.join('; ');
  }

  // ---- typing ----

  someoneTyping(user) {
    const key = userKey(user);
    if (!key || this.myKeys.has(key)) return;
    this.typing.set(key, { name: displayName(user), until: Date.now() + TYPING_SHOWN_MS });
    this.renderTyping();
  }

  /** A message from them: they are done typing it. */
  stoppedTyping(key) {
    if (key && this.typing.delete(key)) this.renderTyping();
  }

  clearTyping() {
    this.typing.clear();
    this.renderTyping();
  }

  renderTyping() {
    const now = Date.now();
    for (const [key, { until }] of this.typing) if (until <= now) this.typing.delete(key);
    const names = [...this.typing.values()].map(({ name }) => name);
    let text = '';
    if (names.length === 1) text = `${names[0]} is typing…`;
    else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
    else if (names.length > 2) text = 'Several people are typing…';
    const line = $('typing');
    if (line.textContent !== text) line.textContent = text;
    clearTimeout(this.typingTimer);
    if (this.typing.size > 0) {
      const soonest = Math.min(...[...this.typing.values()].map(({ until }) => until));
      this.typingTimer = setTimeout(() => this.renderTyping(), Math.max(50, soonest - now));
    }
  }

  /** Tells the room this user is typing: at most every TYPING_SEND_EVERY_MS, with a name, live.
   * Keys pressed meanwhile send one more when the interval is over (still typing, then). */
  typed() {
    if (!this.socketNamed || !this.caughtUp || !$('message-input').value.trim()) return;
    const wait = this.lastTypingSent + TYPING_SEND_EVERY_MS - Date.now();
    if (wait > 0) {
      this.typingLater ??= setTimeout(() => {
        this.typingLater = null;
        this.typed();
      }, wait);
      return;
    }
    if (this.socket?.readyState !== WebSocket.OPEN) return;
    this.lastTypingSent = Date.now();
    this.socket.send('{"typing":true}');
  }

  /** A message sent: what was typed is said; no "typing" left to tell. */
  doneTyping() {
    clearTimeout(this.typingLater);
    this.typingLater = null;
  }

  // ---- messages ----

  /** Who wrote it: a verified name (from a token), a name the sender chose, or nobody. */
  author(user) {
    const author = document.createElement('span');
    author.className = 'author';
    if (user?.id) {
      author.textContent = user.name || user.id;
      author.title = `Signed in as ${user.id}`;
    } else if (user?.name) {
      // Said once for the room (#names-note), not on every message.
      author.textContent = user.name;
      author.classList.add('chosen');
      author.title = 'A name the sender chose; anyone can pick any name.';
      $('names-note').hidden = false;
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

  /** Reads out politely a new message, or who came or went (the visible log is not a live
   * region). */
  announce(text) {
    const announcer = $('announcer');
    const line = document.createElement('p');
    line.textContent = text.length > MAX_ANNOUNCED_CHARS ? `${text.slice(0, MAX_ANNOUNCED_CHARS)}…` : text;
    announcer.append(line);
    while (announcer.childElementCount > MAX_ANNOUNCED) announcer.firstElementChild.remove();
  }

  nearBottom() {
    return this.scroller.scrollHeight - this.scroller.scrollTop - this.scroller.clientHeight < 48;
  }

  scrollToEnd() {
    this.scroller.scrollTop = this.scroller.scrollHeight;
    if (!this.detached) $('jump').hidden = true;
  }

  notify(text) {
    const notice = $('notice');
    notice.textContent = text;
    notice.hidden = false;
    clearTimeout(this.noticeTimer);
    this.noticeTimer = setTimeout(() => this.hideNotice(), 6000);
  }

  hideNotice() {
    clearTimeout(this.noticeTimer);
    $('notice').hidden = true;
  }

  setSendable(sendable) {
    $('message-input').dataset.connected = String(sendable);
  }

  /** Shows a message at once as pending, and sends it now or once connected. */
  post(text, bytes) {
    // Paged back: the conversation's end comes back, where the message goes.
    if (this.detached) this.showNewest();
    const nonce = newNonce();
    this.sentNonces.add(nonce);
    if (this.sentNonces.size > MAX_MESSAGES) this.sentNonces.delete(this.sentNonces.values().next().value);
    const item = document.createElement('li');
    item.className = 'pending mine';
    item.dataset.nonce = nonce;
    const state = document.createElement('span');
    state.className = 'author';
    state.textContent = 'sending…';
    const words = document.createElement('p');
    words.className = 'text';
    words.textContent = text;
    const body = document.createElement('div');
    body.className = 'body';
    body.append(state, words);
    item.append(body);
    this.log.append(item);
    this.pending.set(nonce, { text, item, bytes, sentOn: null });
    this.refreshChrome();
    this.scrollToEnd();
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

  /** An error frame. It says what it answers (`for`) and, for a publish, which one (`nonce`):
   * a typing notice turned down (too frequent) is nothing to tell the user; a refused message
   * goes back into the composer with the reason, or, rate limited, goes again once allowed. */
  refused({ error, for: request, nonce, retry_after_ms: retryAfter }) {
    if (request !== undefined && request !== 'message') return;
    if (this.pending.size === 0) return;
    if (typeof retryAfter === 'number') {
      const seconds = Math.max(1, Math.ceil(retryAfter / 1000));
      this.notify(`Sending too fast: your message goes out again in ${seconds} s.`);
      this.rateLimited = true;
      this.scheduleResend(retryAfter);
      return;
    }
    const named = typeof nonce === 'string' && this.pending.has(nonce) ? [nonce, this.pending.get(nonce)] : null;
    this.giveBack(named ?? this.oldestSentHere(), `Not sent: ${error}`);
  }

  /** Without a nonce to go by (an older server): publishes are answered in order, so an error
   * is about the oldest message still pending on this socket. */
  oldestSentHere() {
    for (const entry of this.pending) {
      if (entry[1].sentOn === this.socket) return entry;
    }
    return this.pending.entries().next().value;
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
      this.refreshChrome();
    }
    this.composerError(reason);
  }

  composerError(reason) {
    const error = $('composer-error');
    error.textContent = reason;
    error.hidden = !reason;
  }

  /** The composer grows with its text, up to its CSS max-height; then it scrolls. */
  fitComposer() {
    const input = $('message-input');
    input.style.height = 'auto';
    const borders = input.offsetHeight - input.clientHeight;
    input.style.height = `${input.scrollHeight + borders}px`;
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
      this.doneTyping();
      this.post(text, bytes);
      input.value = '';
      this.fitComposer();
      input.focus();
    });
    input.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        form.requestSubmit();
      }
    });
    input.addEventListener('input', () => {
      this.fitComposer();
      this.typed();
    });
  }
}

/** A nonce for one message: a UUID v4 (crypto.randomUUID exists only in secure contexts; the
 * same from random bytes elsewhere). */
/** `text` as nodes: http:// and https:// links as links (opened apart from this page, telling
 * it nothing: `noopener noreferrer`), everything else as characters. Other schemes
 * (`javascript:`, `data:`) are never links. A link's trailing punctuation stays text. */
function withLinks(text) {
  const nodes = [];
  let at = 0;
  for (const match of text.matchAll(/\bhttps?:\/\/[^\s<>"'`]+/gi)) {
    let url = match[0];
    const trailing = url.match(/[.,;:!?)\]}]+$/);
    if (trailing) url = url.slice(0, -trailing[0].length);
    let parsed;
    try {
      parsed = new URL(url);
    } catch {
      continue;
    }
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') continue;
    if (match.index > at) nodes.push(document.createTextNode(text.slice(at, match.index)));
    const link = document.createElement('a');
    link.href = parsed.href;
    link.textContent = url;
    link.target = '_blank';
    link.rel = 'noopener noreferrer';
    nodes.push(link);
    at = match.index + url.length;
  }
  if (at < text.length) nodes.push(document.createTextNode(text.slice(at)));
  return nodes;
}

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
