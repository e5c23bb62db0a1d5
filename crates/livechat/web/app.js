// livechat page: pick a room at `/`, chat at `/r/{room}`. Plain JavaScript modules, no framework:
//
//   common.js    who the user is, the server's limits, fetch(), names and times
//   client.js    the protocol: the room's socket, resume, nonces (events, nothing on screen)
//   timeline.js  the messages and the lines between them, history, replies, reactions
//   people.js    who is here, who is typing
//   composer.js  writing, replying, editing; refusals; the reaction picker
//   rooms.js     the picker, and the user's rooms and direct messages with unread badges
//   app.js       this file: the room view, which wires them together
//
// The room view reads recent history over HTTP (and the user's read position: a "New messages"
// line goes where it stopped reading), then follows the room over the socket. `gap` (some
// messages are gone) and `reset` (the room's history started again) are told in the timeline in
// plain words. When the first history read fails, the page follows the room live all the same
// and reads the history again (backing off) until it has it, merging by id. As the user reads
// (the tab visible, the end of the room in view) the page moves the read position
// (`{"read": ID}`, at most once a second), which clears the badges of the user's other tabs.
//
// Identity: on a server with auth required, the page takes a token from its URL fragment
// (`/r/lobby#token=...`), keeps it for this tab only (sessionStorage), removes it from the address
// bar, and sends it to this server alone (`?token=` on the WebSocket, a Bearer header on fetches).
// A token with the `moderate` claim gets delete and ban actions on every message. With auth off,
// the user picks a name, remembered in localStorage and sent as `?name=`.

import {
  $, api, displayName, HISTORY_OPEN, jsonOf, MAX_NAME, me, roomLabel, ROOM_PATTERN, setStatus, TOKEN,
  untilText, userKey,
} from './common.js';
import { RoomClient } from './client.js';
import { Timeline } from './timeline.js';
import { People } from './people.js';
import { barredText, Composer, ReactionPicker } from './composer.js';
import { RoomNav, showPicker } from './rooms.js';

/** Most entries kept in the screen-reader announcer (read once, then only clutter). */
const MAX_ANNOUNCED = 5;
/** The longest text read out for one message. */
const MAX_ANNOUNCED_CHARS = 300;
/** `{"read": ID}` goes out at most this often. */
const READ_EVERY_MS = 1000;
/** What a moderator picks from for a ban's length (seconds; null: until lifted). */
const BAN_DURATIONS = [['10 minutes', 600], ['1 hour', 3600], ['1 day', 86_400], ['1 week', 604_800], ['Until lifted', null]];

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

class RoomView {
  constructor(room) {
    this.room = room;
    this.client = new RoomClient(room, {
      credentials: () => (TOKEN ? { token: TOKEN } : { name: me.name }),
      resumable: () => HISTORY_OPEN && this.timeline.historyLoaded,
    });
    this.timeline = new Timeline(this);
    this.people = new People(this);
    this.composer = new Composer(this);
    this.reactionPicker = new ReactionPicker((id, emoji) => this.react(id, emoji));
    this.nav = new RoomNav(room);
    /** Every key this page's user had here (a name changed is still us leaving). */
    this.myKeys = new Set();
    this.rememberMe();
    /** Whether the current socket speaks under a name (typing needs one). */
    this.socketNamed = false;
    /** Messages from others that came while the tab was hidden (the title counts them). */
    this.unread = 0;
    this.named = false;
    this.stopped = false;
    /** The read position sent last, and a timer for the next. */
    this.readSent = 0;
    this.readTimer = null;
    this.lastReadAt = 0;
  }

  start() {
    $('chat').hidden = false;
    const title = $('room-title');
    title.hidden = false;
    title.textContent = roomLabel(this.room).slice(1);
    title.classList.toggle('direct', this.room.startsWith('dm:'));
    this.updateTitle();
    // The saved name at once (the form shows once the server says names are in use).
    $('name-input').value = me.name;
    this.timeline.start();
    this.people.start();
    this.composer.start();
    this.reactionPicker.start();
    this.wireClient();
    this.wireDialogs();
    document.addEventListener('visibilitychange', () => {
      if (!document.hidden) {
        this.unread = 0;
        this.updateTitle();
        this.readOn();
      }
    });
    this.begin();
  }

  updateTitle() {
    const base = `${roomLabel(this.room)} · livechat`;
    document.title = this.unread > 0 ? `(${this.unread}) ${base}` : base;
  }

  /** A message from someone else came live: counted in the title while the tab is hidden. */
  unseen() {
    if (!document.hidden) return;
    this.unread += 1;
    this.updateTitle();
  }

  wireClient() {
    const on = (type, handler) => this.client.addEventListener(type, (event) => handler(event.detail));
    on('connecting', ({ again }) => {
      setStatus(again ? 'reconnecting' : 'connecting', again ? 'Reconnecting…' : 'Connecting…');
      this.setSendable(false);
      this.people.clearTyping();
      this.socketNamed = me.named;
    });
    on('live', () => {
      setStatus('connected', 'Connected');
      this.setSendable(true);
      this.timeline.refreshChrome();
      this.readOn();
    });
    on('down', ({ code }) => {
      this.people.clearTyping();
      if (code === 4003) this.notify('A moderator disconnected you: connecting again.');
      setStatus('reconnecting', 'Reconnecting…');
      this.setSendable(false);
      // Refused before it opened (a ban, a token that no longer fits): the server says why
      // over HTTP.
      if (code === 1006) this.askWhy();
    });
    on('stopped', ({ code, reason }) => this.stoppedBy(code, reason));
    on('message', (frame) => {
      if (typeof frame.nonce === 'string' && this.timeline.sentNonces.has(frame.nonce)) this.composer.sent();
      const stick = this.timeline.nearBottom();
      const item = this.timeline.add(frame, 'live');
      this.timeline.settle('live', stick, item);
      if (stick) this.readOn();
    });
    on('edited', (frame) => this.timeline.edited(frame));
    on('deleted', (frame) => this.timeline.deleted(frame));
    on('reaction', (frame) => this.timeline.reaction(frame));
    on('reactions', (frame) => this.timeline.reactionsNow(frame));
    on('read', ({ room, id }) => this.readElsewhere(room, id));
    on('presence', (frame) => this.people.presence(frame));
    on('typing', (frame) => this.people.someoneTyping(frame));
    on('gap', (frame) => this.timeline.gap(frame));
    on('reset', () => this.timeline.reset());
    on('ratelimited', (detail) => this.composer.ratelimited(detail));
    on('refused', (detail) => this.refused(detail));
  }

  // Recent history over HTTP first, then the socket resumes right after its last id: nothing
  // published in between is missed. The same request tells (a WebSocket cannot read the
  // handshake's status) whether this server wants a token, whether ours is good here, and
  // whether the user is banned. When it fails otherwise, the socket follows the room live
  // anyway and the history is read again until it comes (merged by id: the socket opened
  // first, so nothing falls in between).
  async begin() {
    setStatus('connecting', 'Connecting…');
    if (!HISTORY_OPEN) {
      this.timeline.note('Earlier messages are not shown on this server: you see what is said from now on.', 0.5);
      if (!TOKEN) this.wireName();
      this.named = true;
      this.client.connect();
      this.nav.start();
      return;
    }
    const [{ outcome, status, answer }, readFrom] = await Promise.all([this.timeline.readLatest(), this.readPosition()]);
    if (this.stopped) return;
    if (outcome === 'denied') {
      this.denied(status, answer);
      return;
    }
    if (outcome === 'ok' && readFrom !== null) {
      this.timeline.readFrom = readFrom;
      this.timeline.markUnread();
    }
    if (!TOKEN && !this.named) this.wireName();
    this.named = true;
    this.client.connect();
    this.nav.start();
    if (outcome === 'failed') this.timeline.retryHistory();
  }

  /** The user's read position in this room, or null (none yet, or no name). */
  async readPosition() {
    if (!me.named) return null;
    try {
      const response = await api('/chat/unread/', { named: true });
      if (!response.ok) return null;
      const answer = await jsonOf(response);
      const entry = answer?.rooms?.find?.(({ room }) => room === this.room);
      return typeof entry?.read_id === 'number' ? entry.read_id : null;
    } catch {
      return null;
    }
  }

  /** The server refused this user here (an HTTP answer, 401 or 403): said, and stopped. */
  denied(status, answer) {
    if (status === 401) {
      this.stop(TOKEN
        ? 'Your sign-in link is invalid or has expired. Ask for a new one.'
        : 'This chat needs a sign-in link (it ends in #token=...). Ask whoever runs it for one.');
    } else if (answer?.error === 'banned') {
      this.stop(barredText(answer));
    } else if (this.room.startsWith('dm:') && typeof answer?.error === 'string') {
      this.stop(`You cannot enter this conversation: ${answer.error}.`);
    } else {
      this.stop(`Your sign-in link does not give access to #${this.room}.`);
    }
  }

  /** The socket could not open: the same refusal over HTTP says why, if it is one. */
  async askWhy() {
    if (this.asking) return;
    this.asking = true;
    try {
      const response = await api(`/chat/presence/?room=${encodeURIComponent(this.room)}`);
      if (response.status === 401 || response.status === 403) this.denied(response.status, await jsonOf(response));
    } catch {
      // Not reachable: the socket keeps trying.
    } finally {
      this.asking = false;
    }
  }

  /** The server closed the socket for good. */
  async stoppedBy(code, reason) {
    if (code === 4001) {
      this.stop('Your session has expired. Open a new sign-in link to go on.');
    } else if (code === 4004) {
      this.stop(`A moderator disconnected you${reason.startsWith('disconnected:') ? reason.slice('disconnected'.length) : ''}. `
        + 'Reload the page to come back, if you may.');
    } else {
      // Banned: the reason is in the close frame; when the ban ends comes from the server.
      let answer = null;
      try {
        const response = await api(`/chat/presence/?room=${encodeURIComponent(this.room)}`);
        if (response.status === 403) answer = await jsonOf(response);
      } catch {
        // Said from the close frame alone.
      }
      const why = reason.replace(/^banned:?\s*/, '');
      this.stop(answer?.error === 'banned' ? barredText(answer) : barredText({ error: 'banned', reason: why }));
    }
  }

  /** Stops for good, saying why (the server refused us; retrying would not help). */
  stop(reason) {
    this.stopped = true;
    this.client.stop();
    this.timeline.stopRetrying();
    setStatus('stopped', 'Not connected');
    $('send-button').disabled = true;
    // Who was here is not known any more: the list would only mislead.
    this.people.forget('Not connected: who is here is not known');
    const notice = $('access');
    notice.textContent = reason;
    notice.hidden = false;
  }

  ownKey() {
    return userKey(me.id ? { id: me.id } : { name: me.name });
  }

  rememberMe() {
    const key = this.ownKey();
    if (key) this.myKeys.add(key);
  }

  isMine(user) {
    if (me.id) return user?.id === me.id;
    return Boolean(me.name) && !user?.id && user?.name === me.name;
  }

  /** Whether `user` (of an event) is this page's user. */
  isMe(user) {
    return this.isMine(user);
  }

  wireName() {
    const form = $('name-form');
    const input = $('name-input');
    form.hidden = false;
    input.value = me.name;
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      const name = input.value.trim().slice(0, MAX_NAME);
      input.value = name;
      if (name === me.name) return;
      me.rename(name);
      this.rememberMe();
      // Replying and reacting need a name: the actions follow.
      this.timeline.rerender();
      // The name is part of the connection: connect again under the new one (once connecting).
      if (this.client.socket) this.client.connect();
      this.nav.start();
    });
  }

  setSendable(sendable) {
    $('message-input').dataset.connected = String(sendable);
  }

  // ---- reading ----

  /** The user reads: the tab is visible, the end of the room in view. The read position
   * moves to the last message shown (at most every READ_EVERY_MS). */
  readOn() {
    if (!me.named || document.hidden || !this.client.caughtUp || !this.timeline.nearBottom()) return;
    const id = this.timeline.lastShownId();
    if (id === null || id <= this.readSent) return;
    const wait = this.lastReadAt + READ_EVERY_MS - Date.now();
    if (wait > 0) {
      this.readTimer ??= setTimeout(() => {
        this.readTimer = null;
        this.readOn();
      }, wait);
      return;
    }
    if (this.client.send({ read: id })) {
      this.readSent = id;
      this.lastReadAt = Date.now();
    }
  }

  /** The user read on elsewhere (another tab or device): nothing here is unread up to `id`. */
  readElsewhere(room, id) {
    if (typeof id !== 'number') return;
    if (room === this.room) {
      this.readSent = Math.max(this.readSent, id);
      const last = this.timeline.lastShownId();
      if (last !== null && id >= last && this.unread > 0) {
        this.unread = 0;
        this.updateTitle();
      }
    }
    this.nav.refresh();
  }

  // ---- what one does to a message ----

  /** A message's action button was pressed. */
  act(action, item, target) {
    if (action === 'jump') {
      this.timeline.jumpTo(Number(target.dataset.target));
      return;
    }
    if (!item || this.stopped) return;
    const { record } = item;
    if (action === 'reply') this.composer.replyTo(record);
    else if (action === 'edit') this.composer.edit(record);
    else if (action === 'react') this.reactionPicker.open(record.id, target);
    else if (action === 'toggle-reaction') this.react(record.id, target.dataset.emoji);
    else if (action === 'delete') this.confirmDelete(record, target);
    else if (action === 'ban') this.openBan(record, target);
  }

  /** Adds this user's reaction `emoji` to message `id`, or takes it back if it is there. */
  react(id, emoji) {
    const frame = this.timeline.reacted(id, emoji) ? { unreact: id, emoji } : { react: id, emoji };
    if (!this.client.send(frame)) this.notify('Not connected: try again in a moment.');
  }

  confirmDelete(record, opener) {
    const dialog = $('delete-dialog');
    $('delete-what').textContent = this.isMine(record.user)
      ? 'Delete your message? It is erased for everyone, and cannot be undone.'
      : `Delete the message from ${displayName(record.user)}? It is erased for everyone, and cannot be undone.`;
    this.dialogFor = { record, opener };
    dialog.returnValue = '';
    dialog.showModal();
  }

  openBan(record, opener) {
    const { user } = record;
    this.dialogFor = { record, opener };
    $('ban-who').textContent = `${displayName(user)} (${user.id})`;
    // Each time from the same start: a ban, the first length, this room, no reason.
    $('ban-form').reset();
    $('ban-error').hidden = true;
    $('ban-dialog').showModal();
  }

  wireDialogs() {
    const deleteDialog = $('delete-dialog');
    deleteDialog.addEventListener('close', () => {
      const { record, opener } = this.dialogFor ?? {};
      if (deleteDialog.returnValue === 'delete' && record) {
        if (!this.client.send({ delete: record.id })) this.notify('Not connected: the message was not deleted.');
      }
      if (opener?.isConnected) opener.focus();
    });
    $('ban-duration').replaceChildren(...BAN_DURATIONS.map(([label, seconds]) => {
      const option = document.createElement('option');
      option.value = seconds === null ? '' : String(seconds);
      option.textContent = label;
      return option;
    }));
    const banDialog = $('ban-dialog');
    $('ban-cancel').addEventListener('click', () => banDialog.close());
    banDialog.addEventListener('close', () => {
      const { opener } = this.dialogFor ?? {};
      if (opener?.isConnected) opener.focus();
    });
    $('ban-form').addEventListener('submit', async (event) => {
      event.preventDefault();
      const { record } = this.dialogFor ?? {};
      if (!record) return;
      const mode = $('ban-form').elements.mode.value;
      const body = { user: record.user.id, mode, reason: $('ban-reason').value.trim() };
      if (!$('ban-everywhere').checked) body.room = this.room;
      const duration = $('ban-duration').value;
      if (duration) body.duration = Number(duration);
      let response = null;
      try {
        response = await api('/api/bans', { method: 'POST', body });
      } catch {
        // Said below.
      }
      const answer = response ? await jsonOf(response) : null;
      if (response?.status !== 201) {
        const error = $('ban-error');
        error.textContent = `Not done: ${answer?.error ?? 'the server did not answer'}.`;
        error.hidden = false;
        return;
      }
      banDialog.close();
      const where = body.room ? `#${this.room}` : 'every room';
      this.notify(`${displayName(record.user)} is ${mode === 'mute' ? 'muted in' : 'banned from'} ${where} `
        + `${untilText(answer.until)}.`);
    });
  }

  /** An error frame about an edit, deletion, reaction or typing; or a refused publish. */
  refused(detail) {
    const { kind, error, frame } = detail;
    if (kind === 'message') {
      this.timeline.dropPending(detail.nonce);
      this.timeline.refreshChrome();
      this.composer.refused(detail);
      return;
    }
    const barred = error === 'muted' || error === 'banned';
    if (kind === 'typing') {
      // Told once, before anything is sent: a muted user learns why as soon as it types.
      if (barred) this.composer.error(barredText(frame));
      return;
    }
    const what = { edit: 'edited', delete: 'deleted', react: 'reacted to' }[kind];
    if (!what) return;
    this.notify(barred ? barredText(frame) : `The message could not be ${what}: ${error}.`);
  }

  // ---- telling the user ----

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

  /** Reads out politely a new message, or who came or went (the visible log is not a live
   * region). */
  announce(text) {
    const announcer = $('announcer');
    const line = document.createElement('p');
    line.textContent = text.length > MAX_ANNOUNCED_CHARS ? `${text.slice(0, MAX_ANNOUNCED_CHARS)}…` : text;
    announcer.append(line);
    while (announcer.childElementCount > MAX_ANNOUNCED) announcer.firstElementChild.remove();
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
