// The timeline: a room's messages in id order, read from history and kept up to date by what the
// socket says (new messages, edits, deletions, reactions), with the lines between them (days,
// joins and leaves, gaps, "New messages").
//
// Bounded: the timeline holds the newest MAX_MESSAGES messages while it follows the room (the
// oldest go; "Load older messages" brings them back), up to MAX_MESSAGES_READING while its user
// reads older ones (past that the newest give way, until "Show newest messages"); the ids and
// nonces remembered are those on screen, the originals of replies looked up at most
// MAX_QUOTES_KEPT.
//
// A message's element (`li.message`, `data-id`) holds, in order: a day heading when it starts a
// day, the quoted line of the message it answers (a button: it jumps there, reading older pages
// when it is not shown), who wrote it, when, "edited", the text, its reactions (buttons: yours
// pressed) and its actions (reply, react; edit and delete your own; a moderator deletes and bans).

import {
  $, api, button, dayLabel, displayName, formatStamp, fullFormat, HISTORY_OPEN, jsonOf, listNames,
  localDay, me, userKey,
} from './common.js';

export const FIRST_PAGE = 100;
const OLDER_PAGE = 100;
/** Most messages in the timeline's DOM (and so in the sets of ids and nonces seen) while it
 * follows the room: past it the oldest are dropped. 500 keeps a long-lived tab light and still
 * holds five pages of history. */
const MAX_MESSAGES = 500;
/** The same while the user reads older messages (paged in with "Load older messages"): past it
 * the newest are dropped, until "Show newest messages"; back at the end, 500 again. */
const MAX_MESSAGES_READING = 2000;
/** Most join/leave lines kept in the timeline (a quiet room where people come and go for days
 * would otherwise grow without messages to push them out). */
const MAX_PRESENCE_NOTES = 50;
/** Joins and leaves within this long of the last line (with nothing said since) join it. */
const NOTE_MERGE_MS = 60_000;
/** Originals of replies read from the server (not on screen) kept for their quoted line. */
const MAX_QUOTES_KEPT = 200;
/** The longest quoted line. */
const QUOTE_CHARS = 120;
/** Older pages read at most to find the message a reply answers. */
const JUMP_MAX_PAGES = 20;

function historyUrl(room, query) {
  return `/chat/history/?room=${encodeURIComponent(room)}&${query}`;
}

/** A message's content as text: a string as it is, anything else as JSON. */
export function textOf(message) {
  if (message === undefined) return '';
  return typeof message === 'string' ? message : JSON.stringify(message);
}

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

/** The first line of a message, short enough to quote. */
function quoted(text) {
  const line = text.split('\n', 1)[0];
  return line.length > QUOTE_CHARS ? `${line.slice(0, QUOTE_CHARS)}…` : line;
}

export class Timeline {
  constructor(view) {
    this.view = view;
    this.room = view.room;
    this.client = view.client;
    this.scroller = $('scroller');
    this.log = $('log');
    /** id -> element of the messages in the timeline (no more: see MAX_MESSAGES). */
    this.items = new Map();
    this.seenNonces = new Set();
    /** nonce -> element: written here, not yet stored. */
    this.pendingItems = new Map();
    /** Nonces of the messages written in this tab (the last MAX_MESSAGES): ours even when
     * anonymous. */
    this.sentNonces = new Set();
    /** The room's latest history has been read (else it is read again, backing off). */
    this.historyLoaded = false;
    this.historyRetryMs = 500;
    this.historyTimer = null;
    /** After a reset: send the pending messages again once the history is back. */
    this.resendAfterReload = false;
    /** Older messages than the first shown exist; the newest are not shown (paging back). */
    this.hasOlder = false;
    this.loadingOlder = null;
    /** Older pages were read in (MAX_MESSAGES_READING holds until the end is in view again). */
    this.reading = false;
    this.detached = false;
    /** The last join/leave line, while later ones may join it; all of them, oldest first. */
    this.lastNote = null;
    this.presenceNotes = new Set();
    /** id -> promise of the message (or null): originals of replies that are not on screen. */
    this.quotes = new Map();
    /** The user's read position when the room was opened: the "New messages" line goes after
     * it (once). */
    this.readFrom = null;
    this.unreadLine = null;
  }

  get messageCount() {
    return this.items.size;
  }

  start() {
    this.scroller.addEventListener('scroll', () => {
      if (!this.nearBottom() || this.detached) return;
      $('jump').hidden = true;
      if (this.reading) this.follow();
      this.view.readOn();
    });
    $('jump').addEventListener('click', () => {
      if (this.detached) this.showNewest();
      this.scrollToEnd();
    });
    $('older').addEventListener('click', () => this.loadOlder());
    this.log.addEventListener('click', (event) => {
      const target = event.target.closest('button[data-action]');
      if (!target || !this.log.contains(target)) return;
      const item = target.closest('li.message');
      this.view.act(target.dataset.action, item, target);
    });
    this.scheduleMidnight();
  }

  // ---- history ----

  /** Reads the latest page of history and shows it: 'ok', 'denied' (an answer saying why),
   * or 'failed'. */
  async readLatest() {
    let response;
    try {
      response = await api(historyUrl(this.room, `limit=${FIRST_PAGE}`), { named: true });
    } catch {
      return { outcome: 'failed' };
    }
    if (response.status === 401 || response.status === 403) {
      return { outcome: 'denied', status: response.status, answer: await jsonOf(response) };
    }
    if (!response.ok) return { outcome: 'failed' };
    const answer = await jsonOf(response);
    if (!answer) return { outcome: 'failed' };
    this.showLatest(answer);
    return { outcome: 'ok' };
  }

  /** The latest history again, until it comes (after a failure, a reset, or "Show newest"). */
  async reloadLatest() {
    if (!HISTORY_OPEN) return;
    clearTimeout(this.historyTimer);
    this.historyTimer = null;
    const { outcome } = await this.readLatest();
    if (outcome === 'failed') this.retryHistory();
  }

  retryHistory() {
    if (this.view.stopped || this.historyTimer !== null) return;
    const wait = this.historyRetryMs;
    this.historyRetryMs = Math.min(this.historyRetryMs * 2, 30_000);
    this.historyTimer = setTimeout(() => {
      this.historyTimer = null;
      this.reloadLatest();
    }, wait);
  }

  stopRetrying() {
    clearTimeout(this.historyTimer);
  }

  showLatest({ chat_history: page, epoch, more }) {
    const messages = Array.isArray(page) ? page : [];
    this.client.advance(messages.at(-1)?.id, epoch);
    const first = !this.historyLoaded;
    this.historyLoaded = true;
    this.historyRetryMs = 500;
    const stick = first || this.nearBottom();
    for (const message of messages) this.add(message, 'history');
    if (messages.length >= FIRST_PAGE || more) this.hasOlder = true;
    this.settle('history', stick);
    if (this.resendAfterReload) {
      this.resendAfterReload = false;
      this.client.resendAll();
    }
  }

  /** "Load older messages": the page before the first one shown, keeping what is in view. */
  loadOlder() {
    this.loadingOlder ??= this.readOlder().finally(() => { this.loadingOlder = null; });
    return this.loadingOlder;
  }

  async readOlder() {
    const button = $('older');
    const first = this.log.querySelector('li.message');
    const before = first ? Number(first.dataset.id) : this.client.lastId + 1;
    button.setAttribute('aria-disabled', 'true');
    button.textContent = 'Loading older messages…';
    try {
      const response = await api(historyUrl(this.room, `before=${before}&limit=${OLDER_PAGE}`), { named: true });
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
      this.view.notify('Could not load older messages. Try again in a moment.');
    } finally {
      button.removeAttribute('aria-disabled');
      button.textContent = 'Load older messages';
      if (button.hidden && document.activeElement === document.body) this.scroller.focus();
    }
  }

  /** Back from paging: the latest history again, following the room live. */
  showNewest() {
    this.clear();
    $('jump').textContent = 'New messages below';
    $('jump').hidden = true;
    this.historyLoaded = false;
    this.reloadLatest();
  }

  /** The room's history is not the one shown (the server lost or reset it): ids start again. */
  reset() {
    const live = this.client.caughtUp;
    this.clear();
    this.note('This room’s history was reset on the server: the earlier messages are gone. '
      + 'Showing the room as it is now.', 0.5);
    // A message sent just before a reset while connected may be lost with it: once the history
    // is back, the pending ones go again (stored once, by their nonces).
    this.resendAfterReload = live;
    this.reloadLatest();
  }

  /** Empties the timeline but for the pending messages. */
  clear() {
    for (const item of [...this.log.children]) {
      if (!item.classList.contains('pending')) item.remove();
    }
    this.items.clear();
    this.seenNonces.clear();
    this.hasOlder = false;
    this.reading = false;
    this.detached = false;
    this.lastNote = null;
    this.presenceNotes.clear();
    this.unreadLine = null;
  }

  // ---- lines between messages ----

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

  /** Ids `from..to` will not come: said plainly, where they would have been. */
  gap({ from, to }) {
    if (typeof from !== 'number' || typeof to !== 'number' || to < from) return;
    const count = to - from + 1;
    this.note(count === 1
      ? `An older message (${from}) is no longer available.`
      : `Some older messages (${from}–${to}, ${count} in all) are no longer available.`, from - 0.5);
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
      const item = this.note('', this.client.lastId + 0.5);
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
    this.view.announce(told.join('; '));
    last.at = Date.now();
    const parts = [];
    if (last.joined.size) parts.push(`${listNames([...last.joined.values()])} joined`);
    if (last.left.size) parts.push(`${listNames([...last.left.values()])} left`);
    last.item.textContent = parts.join('; ');
  }

  /** "New messages" after the read position the user had when the room opened, above the first
   * message from someone else after it (once per visit; gone once the user writes). */
  markUnread() {
    if (this.readFrom === null || this.unreadLine) return;
    const first = [...this.items.values()].find((item) => Number(item.dataset.id) > this.readFrom
      && !item.classList.contains('mine'));
    if (!first) return;
    const line = document.createElement('li');
    line.className = 'event unread-line';
    line.setAttribute('role', 'separator');
    line.textContent = 'New messages';
    this.place(line, Number(first.dataset.id) - 0.5);
    this.unreadLine = line;
    // The first unread one in view, not the end of the room.
    line.scrollIntoView({ block: 'center' });
  }

  removeUnreadLine() {
    this.unreadLine?.remove();
    this.readFrom = null;
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

  // ---- messages ----

  /** Shows a message written here at once, as pending ("sending…"). */
  addPending(nonce, text, replyTo) {
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
    if (replyTo) body.append(this.quote(replyTo));
    body.append(state, words);
    item.append(body);
    this.log.append(item);
    this.pendingItems.set(nonce, item);
    this.refreshChrome();
    this.scrollToEnd();
  }

  /** The pending copy of `nonce` goes (stored, or refused). */
  dropPending(nonce) {
    this.pendingItems.get(nonce)?.remove();
    this.pendingItems.delete(nonce);
  }

  /** Shows a message (from `source`: 'history', 'older' or 'live') unless it is shown already;
   * the new element, or null. Call settle() after. */
  add(record, source) {
    const { id, ts, user, nonce } = record;
    if (typeof nonce === 'string') this.dropPending(nonce);
    if (source === 'live') this.view.people.stoppedTyping(userKey(user));
    if (this.items.has(id) || (typeof nonce === 'string' && this.seenNonces.has(nonce))) return null;
    // Paged back: the newest are not on screen ("Show newest" reads them).
    if (this.detached && source === 'live') return null;
    if (typeof nonce === 'string') this.seenNonces.add(nonce);

    const item = document.createElement('li');
    item.className = 'message';
    item.dataset.id = String(id);
    if (typeof nonce === 'string') item.dataset.nonce = nonce;
    const when = new Date(ts);
    if (!Number.isNaN(when.getTime())) item.dataset.ts = String(when.getTime());
    const mine = (typeof nonce === 'string' && this.sentNonces.has(nonce)) || this.view.isMine(user);
    if (mine) item.classList.add('mine');
    item.record = { id, user, message: record.message, replyTo: record.reply_to, deleted: record.deleted === true, reactions: {} };
    this.items.set(id, item);
    this.render(item, record);
    // Id order, also when a late history page meets newer live frames.
    this.place(item, id);
    this.quotesOf(id);

    if (source === 'live' && !mine) {
      this.view.unseen();
      // Only what comes live is read out, never a replay or history.
      if (this.client.caughtUp) this.view.announce(`${displayName(user)}: ${textOf(record.message)}`);
    }
    return item;
  }

  /** Every message written anew (the user's name changed: what it may do changed too). */
  rerender() {
    for (const item of this.items.values()) this.render(item, item.record);
  }

  /** Writes a message's element from its record (anew: after an edit or a deletion too). */
  render(item, record) {
    const { deleted } = record;
    const state = item.record;
    // The reaction picker may be open in it: it would go with the old body.
    if (item.contains(this.view.reactionPicker.box)) this.view.reactionPicker.close();
    item.classList.toggle('deleted', Boolean(deleted));
    const heading = item.firstElementChild?.classList.contains('day') ? item.firstElementChild : null;
    const body = document.createElement('div');
    body.className = 'body';
    if (typeof state.replyTo === 'number') body.append(this.quote(state.replyTo));
    if (deleted) {
      const text = document.createElement('p');
      text.className = 'text gone';
      text.textContent = 'message deleted';
      body.append(text);
      item.replaceChildren(...(heading ? [heading] : []), body);
      return;
    }
    body.append(this.view.author(state.user));
    if (item.classList.contains('mine')) {
      const you = document.createElement('span');
      you.className = 'you';
      you.textContent = 'you';
      body.append(you);
    }
    const time = document.createElement('time');
    if (item.dataset.ts) {
      const when = new Date(Number(item.dataset.ts));
      time.dateTime = when.toISOString();
      time.textContent = formatStamp(when);
      time.title = fullFormat.format(when);
    }
    body.append(time);
    if (typeof record.edited_ts === 'number') state.editedTs = record.edited_ts;
    if (state.editedTs) {
      const edited = document.createElement('span');
      edited.className = 'edited';
      edited.textContent = '(edited)';
      edited.title = `Edited ${fullFormat.format(new Date(state.editedTs))}`;
      body.append(edited);
    }
    const text = document.createElement('p');
    text.className = 'text';
    // Text, never HTML: whatever a message holds is shown as characters, but for http(s) links.
    text.append(...withLinks(textOf(state.message)));
    const reactions = document.createElement('div');
    reactions.className = 'reactions';
    body.append(text, reactions, this.actions(item));
    item.replaceChildren(...(heading ? [heading] : []), body);
    if (record.reactions && typeof record.reactions === 'object') state.reactions = { ...record.reactions };
    this.renderReactions(item);
  }

  /** What one may do with a message: reply and react; edit and delete one's own; a moderator
   * deletes anyone's and bans its author. */
  actions(item) {
    const { user } = item.record;
    const who = displayName(user);
    const group = document.createElement('div');
    group.className = 'actions';
    group.setAttribute('role', 'group');
    group.setAttribute('aria-label', `Message from ${who}`);
    const named = me.named;
    if (named) {
      group.append(
        button('Reply', { label: `Reply to ${who}`, action: 'reply' }),
        button('React', { label: `React to the message from ${who}`, action: 'react', className: 'react-open' }),
      );
    }
    const mine = item.classList.contains('mine');
    if (mine && named) {
      group.append(
        button('Edit', { label: 'Edit your message', action: 'edit' }),
        button('Delete', { label: 'Delete your message', action: 'delete' }),
      );
    } else if (me.moderator) {
      group.append(button('Delete', { label: `Delete the message from ${who}`, action: 'delete', className: 'moderate' }));
      if (user?.id && user.id !== me.id) {
        group.append(button('Ban…', { label: `Ban or mute ${who}`, action: 'ban', className: 'moderate' }));
      }
    }
    return group;
  }

  renderReactions(item) {
    const box = item.querySelector('.reactions');
    if (!box) return;
    const entries = Object.entries(item.record.reactions).filter(([, { count }]) => count > 0);
    box.replaceChildren(...entries.map(([emoji, { count, me: mine }]) => {
      const toggle = button('', {
        className: 'reaction',
        action: 'toggle-reaction',
        label: `${emoji}: ${count}${mine ? ', you reacted' : ''}. ${mine ? 'Take yours back' : 'Add yours'}`,
      });
      toggle.dataset.emoji = emoji;
      toggle.setAttribute('aria-pressed', String(Boolean(mine)));
      const glyph = document.createElement('span');
      glyph.className = 'emoji';
      glyph.textContent = emoji;
      const number = document.createElement('span');
      number.className = 'count';
      number.textContent = String(count);
      toggle.append(glyph, number);
      return toggle;
    }));
    box.hidden = entries.length === 0;
  }

  /** `{"event": "edited"}`: the latest text, marked as edited. */
  edited(frame) {
    const item = this.items.get(frame.id);
    const cached = this.quotes.get(frame.id);
    if (cached) this.quotes.set(frame.id, cached.then((original) => original && { ...original, message: frame.message }));
    if (!item || item.record.deleted) return;
    item.record.message = frame.message;
    this.render(item, frame);
    this.quotesOf(frame.id);
  }

  /** `{"event": "deleted"}`: "message deleted" in its place (its author gone too, as in
   * history), and in the quotes of its replies. */
  deleted({ id }) {
    this.quotes.set(id, Promise.resolve({ id, deleted: true }));
    const item = this.items.get(id);
    if (item) {
      item.record = { id, replyTo: item.record.replyTo, deleted: true, reactions: {} };
      this.render(item, { deleted: true });
    }
    this.quotesOf(id);
  }

  /** `{"event": "reaction"}`: one user's reaction came or went; the count is the server's. */
  reaction({ id, emoji, user, count, on }) {
    const item = this.items.get(id);
    if (!item || typeof emoji !== 'string' || typeof count !== 'number') return;
    const current = item.record.reactions[emoji] ?? { count: 0, me: false };
    const mine = this.view.isMe(user) ? Boolean(on) : current.me;
    if (count > 0) item.record.reactions[emoji] = { count, me: mine };
    else delete item.record.reactions[emoji];
    this.renderReactions(item);
  }

  /** `{"event": "reactions"}` (on resume): a message's reactions as they are now. */
  reactionsNow({ id, reactions }) {
    const item = this.items.get(id);
    if (!item || !reactions || typeof reactions !== 'object') return;
    item.record.reactions = { ...reactions };
    this.renderReactions(item);
  }

  /** Whether this user reacted to `id` with `emoji`. */
  reacted(id, emoji) {
    return Boolean(this.items.get(id)?.record.reactions[emoji]?.me);
  }

  // ---- replies ----

  /** The quoted line above a reply: a button to the original. */
  quote(id) {
    const link = button('', { className: 'quote', action: 'jump' });
    link.dataset.target = String(id);
    this.fillQuote(link, null);
    this.lookUp(id).then((original) => this.fillQuote(link, original));
    return link;
  }

  fillQuote(link, original) {
    const gone = original?.deleted;
    const who = original && !gone ? displayName(original.user) : null;
    const what = !original ? 'an earlier message' : gone ? 'message deleted' : quoted(textOf(original.message));
    const author = document.createElement('span');
    author.className = 'quote-author';
    author.textContent = who ? `${who}:` : 'In reply to';
    const words = document.createElement('span');
    words.className = 'quote-text';
    words.textContent = what;
    link.replaceChildren(author, ' ', words);
    link.classList.toggle('gone', Boolean(gone));
    link.setAttribute('aria-label', `In reply to ${who ? `${who}: ` : ''}${what}. Go to that message`);
  }

  /** The message `id` as shown, or read from the server (once, kept a while), or null. */
  lookUp(id) {
    const item = this.items.get(id);
    if (item) return Promise.resolve(item.record);
    if (!this.quotes.has(id)) {
      const read = api(historyUrl(this.room, `after=${id - 1}&limit=1`), { named: true })
        .then((response) => (response.ok ? response.json() : null))
        .then((answer) => answer?.chat_history?.find((m) => m.id === id) ?? null)
        .catch(() => null);
      this.quotes.set(id, read);
      if (this.quotes.size > MAX_QUOTES_KEPT) this.quotes.delete(this.quotes.keys().next().value);
    }
    return this.quotes.get(id);
  }

  /** The quotes of `id` again (it came, changed or went). */
  quotesOf(id) {
    const item = this.items.get(id);
    for (const link of this.log.querySelectorAll(`.quote[data-target="${id}"]`)) {
      if (item) this.fillQuote(link, item.record);
      else this.lookUp(id).then((original) => this.fillQuote(link, original));
    }
  }

  /** Shows the message `id`: in view, highlighted and focused; older pages are read until it
   * is there. */
  async jumpTo(id) {
    for (let pages = 0; !this.items.has(id) && pages < JUMP_MAX_PAGES; pages += 1) {
      const first = this.log.querySelector('li.message');
      if (!this.hasOlder || (first && Number(first.dataset.id) <= id)) break;
      await this.loadOlder();
    }
    const item = this.items.get(id);
    if (!item) {
      this.view.notify('That message is no longer in the history.');
      return;
    }
    item.scrollIntoView({ block: 'center' });
    item.tabIndex = -1;
    item.focus({ preventScroll: true });
    item.classList.remove('highlight');
    // Restarted on a second jump to the same message.
    void item.offsetWidth;
    item.classList.add('highlight');
  }

  // ---- keeping to the caps ----

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
      this.items.delete(Number(item.dataset.id));
      if (item.dataset.nonce) this.seenNonces.delete(item.dataset.nonce);
    }
    this.presenceNotes.delete(item);
    if (this.lastNote?.item === item) this.lastNote = null;
    if (this.unreadLine === item) this.unreadLine = null;
    item.remove();
  }

  /** The newest message shown while following the room (what the user has in front of them),
   * or null. */
  lastShownId() {
    if (this.detached) return null;
    let item = this.log.lastElementChild;
    while (item && !item.classList.contains('message')) item = item.previousElementSibling;
    return item ? Number(item.dataset.id) : null;
  }

  /** The pieces around the timeline that follow its content. */
  refreshChrome() {
    const ready = this.historyLoaded;
    const older = $('older');
    const hadFocus = document.activeElement === older;
    older.hidden = !this.hasOlder;
    if (hadFocus && older.hidden) this.scroller.focus();
    $('start').hidden = this.hasOlder || !ready || this.messageCount === 0;
    $('empty').hidden = !ready || this.messageCount > 0 || this.pendingItems.size > 0;
  }

  nearBottom() {
    return this.scroller.scrollHeight - this.scroller.scrollTop - this.scroller.clientHeight < 48;
  }

  scrollToEnd() {
    this.scroller.scrollTop = this.scroller.scrollHeight;
    if (!this.detached) $('jump').hidden = true;
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
    Timeline.dayHeading(item, Timeline.messageBefore(item), now);
    const next = Timeline.messageAfter(item);
    if (next) Timeline.dayHeading(next, item, now);
  }

  fixAllDays() {
    const now = new Date();
    let previous = null;
    for (const item of this.log.querySelectorAll('li.message')) {
      Timeline.dayHeading(item, previous, now);
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
}
