// Who is here: the socket's presence events (a snapshot of the room's people, then at most one
// change a second: joined and left, applied as set operations) and "typing" events. The list
// shows the page's own user first, then the others by name (at most MAX_PEOPLE_SHOWN names),
// tells joins and leaves quietly in the timeline, and says who is typing.

import { $, api, collator, displayName, me, numberFormat, plural, userKey } from './common.js';

/** Most names in the people list's DOM; the others are "and N more". A screen of names is all
 * anyone reads, and a room of thousands stays cheap to redraw (at most once a second). */
const MAX_PEOPLE_SHOWN = 200;
/** How long "… is typing" stays after the last typing event. */
const TYPING_SHOWN_MS = 3000;

export class People {
  constructor(view) {
    this.view = view;
    this.room = view.room;
    /** key -> { id, name }: the room's named users; `members` counts connections. */
    this.people = new Map();
    this.members = 0;
    this.truncated = false;
    /** Presence changes held while the full list is read again. */
    this.held = null;
    /** key -> { name, until }: who is typing, until when. */
    this.typing = new Map();
    this.typingTimer = null;
  }

  start() {
    // Open beside the timeline on a wide screen; one line (opened on demand) on a phone.
    const wide = matchMedia('(min-width: 48rem)');
    const fit = () => {
      for (const id of ['people-details', 'nav-details']) $(id).open = wide.matches;
    };
    fit();
    wide.addEventListener('change', fit);
  }

  presence(frame) {
    if (Array.isArray(frame.users)) {
      this.snapshot(frame);
    } else if (this.held) {
      this.held.push(frame);
    } else {
      this.change(frame);
    }
  }

  /** Who is here (a socket's first frame, or the list read again): no joins or leaves told. */
  snapshot({ members, users, truncated }) {
    this.people = new Map();
    for (const user of users) {
      const key = userKey(user);
      if (key) this.people.set(key, { id: user.id, name: user.name });
    }
    if (typeof members === 'number') this.members = members;
    this.truncated = Boolean(truncated);
    // This page is one of the connections: its user is here, listed or cut off the list.
    const own = this.view.ownKey();
    if (own && !this.people.has(own)) this.people.set(own, { id: me.id, name: me.name || undefined });
    for (const key of this.typing.keys()) {
      if (!this.people.has(key) && !this.truncated) this.typing.delete(key);
    }
    this.render();
    this.renderTyping();
  }

  /** At most once a second: who joined and left (set operations: a joined one may be listed
   * already, a left one gone already), and the count of connections. */
  change({ members, joined, left, truncated }) {
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
    const others = ([key]) => !this.view.myKeys.has(key);
    this.view.timeline.noteComings(arrived.filter(others), gone.filter(others));
    this.render();
    this.renderTyping();
    // More joined or left than one event lists: the whole list again.
    if (truncated) this.refetch();
  }

  async refetch() {
    if (this.held) return;
    this.held = [];
    try {
      const response = await api(`/chat/presence/?room=${encodeURIComponent(this.room)}`);
      if (response.ok) this.snapshot(await response.json());
    } catch {
      // The next truncated change asks again; meanwhile the changes below still apply.
    }
    const held = this.held;
    this.held = null;
    for (const frame of held) this.change(frame);
  }

  /** Not connected: who is here is not known any more, the list would only mislead. */
  forget(why) {
    this.people = new Map();
    this.members = 0;
    this.clearTyping();
    $('people-list').replaceChildren();
    $('people-more').hidden = true;
    $('people-count').textContent = why;
  }

  render() {
    $('people').hidden = false;
    const own = this.view.ownKey();
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
    if (this.truncated) parts.push('and others: the server lists only the first 1,000');
    const more = $('people-more');
    more.textContent = parts.join('; ');
    more.hidden = parts.length === 0;
    $('people-anonymous').hidden = Boolean(own) || me.named;
    // The polite summary changes only when the counts do: nothing read out twice.
    const count = $('people-count');
    const people = this.people.size;
    let who = plural(people, 'person', 'people');
    if (this.truncated) who = `${numberFormat.format(people)}+ people`;
    else if (people === 0) who = 'No one named';
    const text = `${who} here · ${plural(this.members, 'connection', 'connections')}`;
    if (count.textContent !== text) count.textContent = text;
    count.dataset.people = String(people);
    count.dataset.connections = String(this.members);
  }

  // ---- typing ----

  someoneTyping({ user }) {
    const key = userKey(user);
    if (!key || this.view.myKeys.has(key)) return;
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
}
