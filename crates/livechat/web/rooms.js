// Rooms: the picker at `/` (a room by name, the active rooms, those written lately, the user's
// own rooms with their unread counts, direct messages), and beside a room the user's rooms and
// direct messages with their unread badges, read again every UNREAD_EVERY_MS while the tab is
// visible (and when a read position moves).

import {
  $, ago, api, DEFAULT_ROOM, dmPartner, fullFormat, jsonOf, me, numberFormat, ROOM_PATTERN, roomHref,
  roomLabel, TOKEN,
} from './common.js';

const UNREAD_EVERY_MS = 10_000;

/** A link to `room` in a list, with its unread count as a badge (and in its accessible name). */
function roomItem(room, { text = room, unread = 0, current = false, detail = null } = {}) {
  const link = document.createElement('a');
  link.href = roomHref(room);
  link.textContent = text;
  link.dataset.room = room;
  if (current) link.setAttribute('aria-current', 'page');
  if (detail) link.append(' ', detail);
  if (unread > 0) {
    const badge = document.createElement('span');
    badge.className = 'badge';
    badge.textContent = numberFormat.format(unread);
    const words = document.createElement('span');
    words.className = 'visually-hidden';
    words.textContent = ' unread';
    badge.append(words);
    link.append(' ', badge);
  }
  const item = document.createElement('li');
  item.append(link);
  return item;
}

/** The user's rooms with a read position (`{room: unread}`), or null (no name, or none). */
async function unreadCounts() {
  if (!me.named) return null;
  try {
    const response = await api('/chat/unread/', { named: true });
    if (!response.ok) return null;
    const answer = await jsonOf(response);
    const rooms = Array.isArray(answer?.rooms) ? answer.rooms : [];
    return new Map(rooms.filter(({ room }) => typeof room === 'string').map(({ room, unread }) => [room, Number(unread) || 0]));
  } catch {
    return null;
  }
}

/** The user's direct-message rooms (signed in only), the latest written first, or []. */
async function directs() {
  if (!TOKEN) return [];
  try {
    const response = await api('/chat/dm/');
    if (!response.ok) return [];
    const answer = await jsonOf(response);
    return Array.isArray(answer?.directs) ? answer.directs.filter(({ room }) => typeof room === 'string') : [];
  } catch {
    return [];
  }
}

/** A direct message's list entry: who, and the last message's first words. */
function directItem({ room, with: other, last, unread }, current) {
  let detail = null;
  if (last && typeof last === 'object') {
    detail = document.createElement('span');
    detail.className = 'last';
    const text = last.deleted ? 'message deleted'
      : (typeof last.message === 'string' ? last.message : JSON.stringify(last.message ?? ''));
    detail.textContent = text.length > 40 ? `${text.slice(0, 40)}…` : text;
  }
  return roomItem(room, { text: `@${other ?? dmPartner(room)}`, unread, current: room === current, detail });
}

/** Opens a direct-message room with the user named in `#dm-input`. */
function wireDirectForm() {
  const form = $('dm-form');
  const input = $('dm-input');
  const error = $('dm-error');
  form.hidden = false;
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const other = input.value.trim();
    if (!other) return;
    error.hidden = true;
    let answer = null;
    let status = 0;
    try {
      const response = await api('/chat/dm/', { method: 'POST', body: { with: other } });
      status = response.status;
      answer = await jsonOf(response);
    } catch {
      // Said below.
    }
    if (status === 200 && typeof answer?.room === 'string') {
      location.assign(roomHref(answer.room));
      return;
    }
    error.textContent = `Could not open a conversation with ${other}: ${answer?.error ?? 'the server did not answer'}.`;
    error.hidden = false;
    input.focus();
  });
}

// ---- the picker -------------------------------------------------------------------------

export async function showPicker(problem) {
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
  if (TOKEN) wireDirectForm();
  input.focus();
  await listRooms();
}

/** Links to the active rooms (with their member counts), those written lately, the user's own
 * (with what is unread) and its direct messages. */
async function listRooms() {
  let rooms = [];
  let recent = [];
  const [unread, dms] = await Promise.all([unreadCounts(), directs(), (async () => {
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
  })()]);
  const counts = unread ?? new Map();
  const dmRooms = new Set(dms.map(({ room }) => room));
  const own = [...counts.keys()].filter((room) => !dmRooms.has(room) && dmPartner(room) === null).sort();
  $('mine-list').replaceChildren(...own.map((room) => roomItem(room, { unread: counts.get(room) })));
  $('mine').hidden = own.length === 0;
  $('dm-list').replaceChildren(...dms.map((dm) => directItem(dm, null)));
  $('directs').hidden = !TOKEN;
  $('no-directs').hidden = dms.length > 0;

  // Direct messages are listed above, the user's own only.
  rooms = rooms.filter(({ room }) => typeof room === 'string' && dmPartner(room) === null);
  $('room-list').replaceChildren(...rooms.map(({ room, members }) => roomItem(room, {
    text: `${room} (${members})`, unread: counts.get(room) ?? 0,
  })));
  $('no-rooms').hidden = rooms.length > 0;
  // Rooms with people in them are listed above already.
  const active = new Set(rooms.map(({ room }) => room));
  const quiet = recent.filter(({ room }) => typeof room === 'string' && !active.has(room) && dmPartner(room) === null);
  $('recent-list').replaceChildren(...quiet.map(({ room, ts }) => {
    let when = null;
    if (typeof ts === 'number') {
      when = document.createElement('time');
      when.dateTime = new Date(ts).toISOString();
      when.textContent = ago(ts);
      when.title = `Last message: ${fullFormat.format(new Date(ts))}`;
    }
    return roomItem(room, { unread: counts.get(room) ?? 0, detail: when });
  }));
  $('recent').hidden = quiet.length === 0;
}

// ---- beside a room ----------------------------------------------------------------------

/** The user's rooms and direct messages beside the room it is in, with unread badges. */
export class RoomNav {
  constructor(current) {
    this.current = current;
    this.timer = null;
    this.reading = null;
  }

  /** Once there is a name (or a token) to read positions for. */
  start() {
    if (!me.named || this.started) return;
    this.started = true;
    document.addEventListener('visibilitychange', () => {
      if (!document.hidden) this.refresh();
    });
    this.refresh();
  }

  /** Reads the counts again now (once at a time), and again in UNREAD_EVERY_MS. */
  refresh() {
    clearTimeout(this.timer);
    this.reading ??= this.read().finally(() => {
      this.reading = null;
      this.timer = setTimeout(() => {
        if (!document.hidden) this.refresh();
      }, UNREAD_EVERY_MS);
    });
    return this.reading;
  }

  async read() {
    const [unread, dms] = await Promise.all([unreadCounts(), directs()]);
    const counts = unread ?? new Map();
    const dmRooms = new Set(dms.map(({ room }) => room));
    const rooms = [...counts.keys()].filter((room) => !dmRooms.has(room) && dmPartner(room) === null);
    if (dmPartner(this.current) === null && !rooms.includes(this.current)) rooms.push(this.current);
    rooms.sort();
    // The room in view is being read: no badge on it.
    $('nav-rooms').replaceChildren(...rooms.map((room) => roomItem(room, {
      text: roomLabel(room), unread: room === this.current ? 0 : counts.get(room), current: room === this.current,
    })));
    $('nav-dms').replaceChildren(...dms.map((dm) => directItem({ ...dm, unread: dm.room === this.current ? 0 : dm.unread }, this.current)));
    $('nav-dms-title').hidden = dms.length === 0;
    $('room-nav').hidden = false;
  }
}
