// livechat page: pick a room at `/`, chat at `/r/{room}`. Plain JavaScript, no framework.
//
// The room view shows recent history, then live messages over a WebSocket with `?meta=1`, so
// every frame carries its id. After a reconnect it reads the history after the last id it saw,
// so nothing sent while it was away is missing; ids also drop duplicates and keep the order.
'use strict';

const ROOM_PATTERN = /^[A-Za-z0-9_-]{1,94}$/;
const FIRST_PAGE = 100;
const CATCH_UP_PAGE = 1000;
const RETRY_FIRST_MS = 500;
const RETRY_MAX_MS = 5000;

const $ = (id) => document.getElementById(id);

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
    const response = await fetch('/chat/rooms/');
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
    this.seen = new Set();
    this.socket = null;
    this.retryMs = RETRY_FIRST_MS;
    this.log = $('log');
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
    this.connect();
  }

  connect() {
    setStatus(this.socket ? 'reconnecting' : 'connecting', this.socket ? 'Reconnecting…' : 'Connecting…');
    this.setSendable(false);
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const url = `${scheme}://${location.host}/ws/chat/${encodeURIComponent(this.room)}/?meta=1`;
    const socket = new WebSocket(url);
    this.socket = socket;
    socket.addEventListener('open', () => {
      this.retryMs = RETRY_FIRST_MS;
      setStatus('connected', 'Connected');
      this.setSendable(true);
      this.fillIn();
    });
    socket.addEventListener('message', (event) => this.receive(event.data));
    socket.addEventListener('close', () => {
      if (socket !== this.socket) return;
      setStatus('reconnecting', 'Reconnecting…');
      this.setSendable(false);
      setTimeout(() => this.connect(), this.retryMs);
      this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
    });
  }

  // The first time, the latest page of history; after a reconnect, everything after the last
  // message seen. Live frames may arrive meanwhile: `add` drops duplicates and keeps id order.
  async fillIn() {
    try {
      if (this.lastId === 0) {
        await this.load(historyUrl(this.room, `limit=${FIRST_PAGE}`));
        return;
      }
      let page;
      do {
        page = await this.load(historyUrl(this.room, `after=${this.lastId}&limit=${CATCH_UP_PAGE}`));
      } while (page.length === CATCH_UP_PAGE);
    } catch {
      // The socket's close event retries; the next open fills in again.
    }
  }

  async load(url) {
    const response = await fetch(url);
    if (!response.ok) throw new Error(`history: HTTP ${response.status}`);
    const { chat_history: page } = await response.json();
    for (const message of page) this.add(message);
    return page;
  }

  receive(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (typeof frame.error === 'string') {
      this.notify(frame.error);
    } else if (typeof frame.id === 'number') {
      this.add(frame);
    }
  }

  add({ id, ts, message }) {
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
    item.append(time, text);

    // Keep id order when a late history page meets newer live frames.
    let next = null;
    for (let other = this.log.lastElementChild; other; other = other.previousElementSibling) {
      if (Number(other.dataset.id) < id) break;
      next = other;
    }
    this.log.insertBefore(item, next);

    if (stick) this.scrollToEnd();
    else $('jump').hidden = false;
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
    $('send-button').disabled = !sendable;
  }

  wireComposer() {
    const form = $('send-form');
    const input = $('message-input');
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      const text = input.value;
      if (!text.trim()) return;
      if (!this.socket || this.socket.readyState !== WebSocket.OPEN) {
        this.notify('Not connected: your message was not sent.');
        return;
      }
      this.socket.send(JSON.stringify({ message: text }));
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

// ---- start ----------------------------------------------------------------------------

const room = roomFromPath();
if (room === null) {
  showPicker();
} else if (!ROOM_PATTERN.test(room)) {
  showPicker(`“${room}” is not a room name: use letters, digits, _ and -, 1 to 94 characters.`);
} else {
  new RoomView(room).start();
}
