// livechat-client: one room of a livechat server, followed over a WebSocket (or, where a network
// will not carry WebSockets, Server-Sent Events), without a gap, without a duplicate, with every
// message this client publishes stored once. No dependencies: browsers, Node 22+ (Node 20 with a
// WebSocket implementation passed in), Bun, Deno. Reference: README.md beside this file; the
// protocol: the server's docs/asyncapi.yaml (livechat.d.ts types it).
//
// - Resume: every frame is asked for with its id (`meta=1`); the client keeps the last id it has
//   seen and the room's epoch, and every reconnection asks for what came after (`since`, `epoch`):
//   the server replays it, says `caught_up`, then goes on live. Ids at or below the last one seen
//   are not told twice. `gap` (ids no longer stored) and `reset` (the room's numbering started
//   again) are told as events.
// - Publish once: each message goes with a nonce and stays pending until its stored copy comes
//   back; pending ones are sent again after a reconnect with the same nonce, which the server
//   stores once.
// - Reconnect: after any drop, with a growing delay and jitter, so that a restarted server is
//   not met by all of its clients in the same millisecond. A WebSocket that closes before it
//   opened is followed by one plain GET of its URL (browsers hide a refused handshake's status):
//   the server answers it as it answered the handshake, so a refusal (401, 403, 400) stops the
//   client with its status and reason, and 426 (the server would have let it in) means a network
//   or proxy that blocks WebSockets.
// - Presence: `syncState` and `syncDiff` fold the server's presence frames into a plain state
//   object (pure functions, as Phoenix Presence's).
// - Fallback: when WebSockets cannot be opened but HTTP works (some proxies), the room is followed
//   with an EventSource on `/sse/chat/{room}/` and published with `POST /chat/send/` (edits,
//   reactions and reads over their HTTP routes).

export const VERSION = '0.1.0';

/** Close codes after which reconnecting would not help or is not wanted. */
const TOKEN_EXPIRED = 4001;
const MODERATOR_CLOSED = 4003;
const DO_NOT_RECONNECT = 4004;
const TOO_LARGE = 1009;
/** Statuses of a refused handshake (as a probe sees them) after which reconnecting would not
 * help: the request itself (400), the credentials (401), a ban, the origin or the room (403). */
const REFUSED_FOR_GOOD = new Set([400, 401, 403]);
/** Most characters of a probe's answer kept when it is not JSON (a proxy's error page). */
const PROBE_TEXT_CHARS = 500;
/** `{"typing": true}` at most this often: the server passes one per user per 2 s on and absorbs
 * the others; a little over 2 s, so that a frame arriving a few ms early is not lost. */
const TYPING_EVERY_MS = 2200;

const ROOM_EVENTS = new Set(['edited', 'deleted', 'reaction', 'reactions', 'read', 'seen', 'typing', 'token']);

/** A nonce for one message: a UUID v4 (`crypto.randomUUID` exists only in secure contexts in
 * browsers; the same from random bytes elsewhere). */
export function newNonce() {
  if (typeof crypto.randomUUID === 'function') return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** How long to wait before reconnection attempt `attempt` (0 for the first): the ceiling
 * doubles from `initialMs` up to `maxMs`, and the wait is between half the ceiling and the
 * ceiling ("equal jitter"), so clients dropped together come back spread out, never at once. */
export function backoffDelay(attempt, { initialMs = 500, maxMs = 10_000, random = Math.random } = {}) {
  const ceiling = Math.min(maxMs, initialMs * 2 ** Math.min(attempt, 30));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

// ---- presence ---------------------------------------------------------------------------

/** What tells users apart, as the server does: a token's id, else a chosen name; null for an
 * anonymous connection (counted in `members`, never listed). */
export function userKey(user) {
  if (typeof user?.id === 'string' && user.id) return `i:${user.id}`;
  if (typeof user?.name === 'string' && user.name) return `n:${user.name}`;
  return null;
}

/** A room's presence before any frame: nobody known. */
export const EMPTY_PRESENCE = Object.freeze({ members: 0, users: Object.freeze({}), truncated: false });

function person(user) {
  const kept = {};
  if (typeof user.id === 'string') kept.id = user.id;
  if (typeof user.name === 'string') kept.name = user.name;
  if (typeof user.connections === 'number') kept.connections = user.connections;
  return kept;
}

/** The state after a full list of who is here (a presence snapshot frame, or the answer of
 * `GET /chat/presence/`): users not in `state` are told to `onJoin(key, user)`, users no longer
 * listed to `onLeave(key, user)` (none of them leave when the list was cut at the server's
 * bound, `truncated`). Pure: `state` is not changed. */
export function syncState(state, snapshot, onJoin = () => {}, onLeave = () => {}) {
  const before = state?.users ?? {};
  const users = {};
  for (const user of Array.isArray(snapshot?.users) ? snapshot.users : []) {
    const key = userKey(user);
    if (key) users[key] = person(user);
  }
  const truncated = snapshot?.truncated === true;
  for (const [key, user] of Object.entries(users)) if (!(key in before)) onJoin(key, user);
  for (const [key, user] of Object.entries(before)) {
    if (key in users) continue;
    if (truncated) users[key] = user;
    else onLeave(key, user);
  }
  const members = typeof snapshot?.members === 'number' ? snapshot.members : (state?.members ?? 0);
  return { members, users, truncated };
}

/** The state after a change (`joined`, `left`, `members`), applied as set operations: a user
 * joining who is listed already, or leaving who is not, changes nothing (and is not told).
 * Pure. A change marked `truncated` listed only some of the users who came or went: read the
 * whole list again (`syncState`). */
export function syncDiff(state, diff, onJoin = () => {}, onLeave = () => {}) {
  const users = { ...(state?.users ?? {}) };
  for (const user of Array.isArray(diff?.joined) ? diff.joined : []) {
    const key = userKey(user);
    if (!key || key in users) continue;
    users[key] = person(user);
    onJoin(key, users[key]);
  }
  for (const user of Array.isArray(diff?.left) ? diff.left : []) {
    const key = userKey(user);
    if (!key || !(key in users)) continue;
    const gone = users[key];
    delete users[key];
    onLeave(key, gone);
  }
  const members = typeof diff?.members === 'number' ? diff.members : (state?.members ?? 0);
  return { members, users, truncated: state?.truncated === true };
}

/** The users of a presence state, sorted by what a person reads (their name, else their id). */
export function presenceList(state) {
  const label = (user) => user.name || user.id || '';
  return Object.values(state?.users ?? {}).sort((a, b) => label(a).localeCompare(label(b)));
}

// ---- events -------------------------------------------------------------------------------

/** `on(type, listener)` (answers a function that takes the listener off), `once`, `off`. A
 * listener that throws does not stop the client or the other listeners: its error goes to the
 * `error` listeners, or, without any, is thrown again on its own (an uncaught error). */
export class Emitter {
  #listeners = new Map();

  on(type, listener) {
    if (!this.#listeners.has(type)) this.#listeners.set(type, new Set());
    this.#listeners.get(type).add(listener);
    return () => this.off(type, listener);
  }

  once(type, listener) {
    const off = this.on(type, (detail) => {
      off();
      listener(detail);
    });
    return off;
  }

  off(type, listener) {
    this.#listeners.get(type)?.delete(listener);
  }

  emit(type, detail = {}) {
    for (const listener of [...(this.#listeners.get(type) ?? [])]) {
      try {
        listener(detail);
      } catch (error) {
        if (type !== 'error' && this.#listeners.get('error')?.size) {
          this.emit('error', error);
        } else {
          queueMicrotask(() => {
            throw error;
          });
        }
      }
    }
  }
}

// ---- the client ---------------------------------------------------------------------------

/** Where the server is: `url` (http, https, ws or wss; a browser page's own server when absent). */
function serverBases(url) {
  const given = url ?? globalThis.location?.origin;
  if (!given) throw new TypeError('livechat: no server url (pass `url`, e.g. "http://127.0.0.1:8003")');
  const parsed = new URL(given);
  const secure = parsed.protocol === 'https:' || parsed.protocol === 'wss:';
  const host = parsed.host;
  return { http: `${secure ? 'https' : 'http'}://${host}`, ws: `${secure ? 'wss' : 'ws'}://${host}` };
}

/**
 * One room, followed. `new LivechatClient({ url, room, ... })`, listeners with `on()`, then
 * `connect()`. Options (all but `room` optional):
 * - `url`: the server (`http://127.0.0.1:8003`); in a page, the page's own server.
 * - `room`; `token` (auth on) or `name` (auth off: the name the user chose).
 * - `presence` (default true), `receipts` (default false): ask for those events.
 * - `since`: `'latest'` (default: the room's latest id is read over HTTP first, so that nothing
 *   published after `connect()` is missed), a number (resume after that id; 0: everything
 *   stored, up to the server's replay bound), or `null` (live only until an id is seen).
 *   `epoch`: the epoch `since` counts in.
 * - `transport`: `'auto'` (default: WebSocket, then Server-Sent Events when WebSockets cannot be
 *   opened), `'websocket'` or `'sse'`. `fallbackAfter` (default 2): WebSocket attempts that
 *   never opened before an SSE attempt.
 * - `backoff`: `{ initialMs: 500, maxMs: 10000 }`.
 * - `maxPending` (default 500): messages published but not yet stored; `send` throws past it.
 * - `maxMessageBytes`: the server's limit (`LIVECHAT_MAX_MESSAGE_BYTES`); `send` throws for a
 *   larger frame instead of having the connection closed 1009.
 * - `WebSocket`, `EventSource`, `fetch`: implementations (default: the global ones; Node 20
 *   has no global WebSocket or EventSource: pass those of the `ws` and `eventsource` packages).
 */
export class LivechatClient extends Emitter {
  constructor(options = {}) {
    super();
    if (typeof options.room !== 'string' || !options.room) throw new TypeError('livechat: `room` is required');
    this.room = options.room;
    this.bases = serverBases(options.url);
    this.token = options.token ?? null;
    this.name = options.name ?? null;
    this.wantPresence = options.presence ?? true;
    this.wantReceipts = options.receipts ?? false;
    this.mode = options.transport ?? 'auto';
    if (!['auto', 'websocket', 'sse'].includes(this.mode)) throw new TypeError(`livechat: unknown transport ${this.mode}`);
    this.fallbackAfter = options.fallbackAfter ?? 2;
    this.backoff = { initialMs: 500, maxMs: 10_000, ...options.backoff };
    this.maxPending = options.maxPending ?? 500;
    this.maxMessageBytes = options.maxMessageBytes ?? Infinity;
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this.EventSource = options.EventSource ?? globalThis.EventSource;
    this.fetch = options.fetch ?? globalThis.fetch?.bind(globalThis);
    /** The last id seen (or skipped by a gap) and the epoch it counts in: where to resume. */
    this.lastId = typeof options.since === 'number' ? options.since : 0;
    this.epoch = options.epoch ?? null;
    this.startFrom = options.since === undefined ? 'latest' : options.since;
    this.resumable = typeof options.since === 'number';
    /** The room's people, as `syncState`/`syncDiff` keep it. */
    this.presence = EMPTY_PRESENCE;
    this.presenceHeld = null;
    /** nonce -> { body, bytes, sentOn }: published here, not yet stored. */
    this.pendingMessages = new Map();
    /** The furthest read position asked for and not yet sent. */
    this.readWanted = null;
    this.connection = null;
    this.connectionKind = null;
    /** The current connection asked for a replay (`since`): it is live once `caught_up` comes. */
    this.resuming = false;
    this.caughtUp = false;
    this.stopped = false;
    this.started = false;
    this.attempt = 0;
    this.failedWebSocketOpens = 0;
    this.sseWorked = false;
    this.retryTimer = null;
    this.resendTimer = null;
    this.lastTypingSent = 0;
  }

  /** `'websocket'` or `'sse'` while connected or connecting; null before. */
  get transport() {
    return this.connectionKind;
  }

  /** Whether the connection is live (its replay is done): what is sent now goes at once. */
  get live() {
    return this.caughtUp;
  }

  /** How many published messages are not stored yet. */
  get pending() {
    return this.pendingMessages.size;
  }

  /** Opens the connection (and keeps it open until `close()`). */
  async connect() {
    if (this.started || this.stopped) return;
    this.started = true;
    if (this.startFrom === 'latest') await this.readLatestId();
    if (!this.stopped) await this.open();
  }

  /** Closes for good. */
  close() {
    if (this.stopped) return;
    this.stop();
    this.emit('stopped', { code: 1000, reason: 'closed by the client' });
  }

  stop() {
    this.stopped = true;
    this.caughtUp = false;
    clearTimeout(this.retryTimer);
    clearTimeout(this.resendTimer);
    this.drop(this.connection);
  }

  /** The room's latest id and epoch, so that the first connection resumes from there. Without
   * them (history not readable here, or the server unreachable) the connection is live only,
   * and the next one resumes after the last id seen (read again before it while none was).
   * Credentials the server refuses stop the client. */
  async readLatestId() {
    try {
      this.takePosition(await this.http('GET', `/chat/history/?room=${encodeURIComponent(this.room)}&limit=1`));
    } catch (error) {
      const historyClosed = String(error.message).includes('LIVECHAT_HISTORY_READS');
      if (error.status === 401 || (error.status === 403 && !historyClosed)) {
        this.stop();
        this.emit('stopped', { code: error.status, reason: error.message });
      }
    }
  }

  takePosition(answer) {
    const page = answer?.chat_history;
    if (!Array.isArray(page)) return;
    const last = page[page.length - 1];
    this.advance(typeof last?.id === 'number' ? last.id : 0, answer.epoch);
    this.resumable = true;
  }

  advance(id, epoch) {
    if (typeof epoch === 'string' && epoch) this.epoch = epoch;
    if (typeof id === 'number' && id > this.lastId) this.lastId = id;
  }

  /** The next attempt's transport: WebSocket, but for SSE once it worked here or when
   * WebSockets did not open `fallbackAfter` times running (then alternating, until one opens). */
  nextKind() {
    if (this.mode !== 'auto') return this.mode;
    if (this.sseWorked || !this.WebSocket) return 'sse';
    if (!this.EventSource || !this.fetch) return 'websocket';
    if (this.failedWebSocketOpens >= this.fallbackAfter && this.connectionKind === 'websocket') return 'sse';
    return 'websocket';
  }

  query() {
    const params = new URLSearchParams({ meta: '1' });
    if (this.wantPresence) params.set('presence', '1');
    if (this.wantReceipts) params.set('receipts', '1');
    this.resuming = this.resumable || this.lastId > 0;
    if (this.resuming) {
      params.set('since', String(this.lastId));
      if (this.epoch) params.set('epoch', this.epoch);
    }
    if (this.token) params.set('token', this.token);
    else if (this.name) params.set('name', this.name);
    return params;
  }

  async open() {
    if (this.stopped) return;
    clearTimeout(this.retryTimer);
    if (!this.resumable && this.lastId === 0 && this.startFrom === 'latest' && this.attempt > 0) {
      await this.readLatestId();
      if (this.stopped) return;
    }
    this.drop(this.connection);
    this.caughtUp = false;
    const kind = this.nextKind();
    this.connectionKind = kind;
    this.emit('connecting', { transport: kind, again: this.attempt > 0 });
    const path = `/chat/${encodeURIComponent(this.room)}/?${this.query()}`;
    if (kind === 'sse') this.openEventSource(`${this.bases.http}/sse${path}`);
    else this.openWebSocket(`${this.bases.ws}/ws${path}`);
  }

  openWebSocket(url) {
    if (!this.WebSocket) throw new TypeError('livechat: no WebSocket implementation (pass `WebSocket`, e.g. from the ws package)');
    let socket;
    try {
      socket = new this.WebSocket(url);
    } catch (error) {
      this.failedWebSocketOpens += 1;
      this.down({ code: 1006, reason: String(error?.message ?? error) });
      return;
    }
    const connection = { kind: 'websocket', socket, opened: false };
    this.connection = connection;
    socket.addEventListener('open', () => {
      if (connection !== this.connection) return;
      connection.opened = true;
      this.failedWebSocketOpens = 0;
      // Not resuming: no `caught_up` comes, the socket is live as soon as it is open.
      if (!this.resuming) this.goLive({});
    });
    socket.addEventListener('message', (event) => {
      if (connection === this.connection) this.receive(event.data);
    });
    socket.addEventListener('close', (event) => {
      if (connection !== this.connection || this.stopped) return;
      if (connection.opened) {
        this.closed(connection, event.code, event.reason ?? '');
        return;
      }
      this.failedWebSocketOpens += 1;
      this.neverOpened(connection, url, event.code, event.reason ?? '');
    });
    // An error is followed by `close`: nothing to do here, but a listener keeps Node quiet.
    socket.addEventListener('error', () => {});
  }

  openEventSource(url) {
    if (!this.EventSource) {
      throw new TypeError('livechat: no WebSocket or EventSource implementation (pass `WebSocket`, e.g. from the ws package)');
    }
    const source = new this.EventSource(url);
    const connection = { kind: 'sse', source, opened: false };
    this.connection = connection;
    source.addEventListener('open', () => {
      if (connection !== this.connection) return;
      connection.opened = true;
      this.sseWorked = true;
      if (!this.resuming) this.goLive({});
    });
    source.addEventListener('message', (event) => {
      if (connection === this.connection) this.receive(event.data);
    });
    // The server ends a stream with the close the WebSocket would have had.
    source.addEventListener('close', (event) => {
      if (connection !== this.connection || this.stopped) return;
      let close = {};
      try {
        close = JSON.parse(event.data);
      } catch {
        // Not the server's close: an ordinary drop.
      }
      this.closed(connection, close.code ?? 1006, close.reason ?? '');
    });
    // EventSource would reconnect by itself with its first URL: this client reconnects instead,
    // resuming from the last id it has seen.
    source.addEventListener('error', () => {
      if (connection !== this.connection || this.stopped) return;
      this.closed(connection, 1006, connection.opened ? 'stream ended' : 'stream could not be opened');
    });
  }

  /** A WebSocket closed before it opened: one plain GET of its URL says why (see `probe`). A
   * refusal for good stops the client (`stopped` with the HTTP status as `code`, the server's
   * `error` as `reason`, and `status`, `body`); anything else is a drop like any other, told
   * with what the probe saw (`down` with `status` and `body`, or `status: null`: no answer). */
  async neverOpened(connection, url, code, reason) {
    const answer = await this.probe(url);
    if (connection !== this.connection || this.stopped) return;
    // A page's cookies go with its WebSocket, but with a fetch only to its own origin: a 401
    // without a token, from another origin, may be for want of a cookie the handshake had.
    const pageOrigin = globalThis.location?.origin;
    const withoutCookies = !this.token && pageOrigin && new URL(this.bases.http).origin !== pageOrigin;
    if (answer && REFUSED_FOR_GOOD.has(answer.status) && !(answer.status === 401 && withoutCookies)) {
      this.drop(connection);
      this.stop();
      const why = typeof answer.body?.error === 'string' ? answer.body.error : `HTTP ${answer.status}`;
      const detail = typeof answer.body?.reason === 'string' ? `${why}: ${answer.body.reason}` : why;
      this.emit('stopped', { code: answer.status, reason: detail, status: answer.status, body: answer.body });
      return;
    }
    this.closed(connection, code, reason, answer ?? { status: null, body: null });
  }

  /** The server's answer to a plain GET of a WebSocket URL: `{ status, body }` (426: it would
   * have let the handshake in), or null when nothing answered (the network) or this client has
   * no `fetch`. The server answers it as it would the handshake (docs/protocol.md). */
  async probe(url) {
    if (!this.fetch) return null;
    try {
      const response = await this.fetch(url.replace(/^ws/, 'http'), { method: 'GET' });
      const text = await response.text();
      let body;
      try {
        body = text ? JSON.parse(text) : {};
      } catch {
        body = { error: text.slice(0, PROBE_TEXT_CHARS) };
      }
      return { status: response.status, body };
    } catch {
      return null;
    }
  }

  drop(connection) {
    if (!connection) return;
    if (connection === this.connection) this.connection = null;
    if (connection.kind === 'sse') connection.source.close();
    else if (connection.socket.readyState <= 1) connection.socket.close(1000, 'reconnecting');
  }

  closed(connection, code, reason, probed = {}) {
    this.drop(connection);
    this.caughtUp = false;
    if (code === TOKEN_EXPIRED || code === DO_NOT_RECONNECT
      || (code === MODERATOR_CLOSED && reason.startsWith('banned'))) {
      this.stop();
      this.emit('stopped', { code, reason });
      return;
    }
    if (code === TOO_LARGE) this.refuseLargest(connection);
    this.down({ code, reason, ...probed });
  }

  down({ code, reason, ...probed }) {
    this.emit('down', { code, reason, transport: this.connectionKind, ...probed });
    const wait = backoffDelay(this.attempt, this.backoff);
    this.attempt += 1;
    this.retryTimer = setTimeout(() => this.open(), wait);
  }

  /** The connection is live: its replay is done (`caught_up`), or it opened without one. */
  goLive({ id, epoch }) {
    this.advance(id, epoch);
    this.caughtUp = true;
    this.attempt = 0;
    this.emit('live', { transport: this.connectionKind, id: this.lastId, epoch: this.epoch });
    this.flushPending(false);
    if (this.readWanted !== null) this.read(this.readWanted);
  }

  receive(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (frame === null || typeof frame !== 'object') return;
    switch (frame.event) {
      case 'caught_up':
        this.goLive(frame);
        return;
      case 'gap':
        if (typeof frame.to === 'number') this.advance(frame.to);
        this.emit('gap', frame);
        return;
      case 'reset':
        this.lastId = typeof frame.last === 'number' ? frame.last : 0;
        if (frame.epoch) this.epoch = frame.epoch;
        // A message sent just before the reset may be lost with the old numbering: all the
        // pending ones go again (stored once, by their nonces).
        for (const entry of this.pendingMessages.values()) entry.sentOn = null;
        this.emit('reset', frame);
        if (this.caughtUp) this.flushPending(false);
        return;
      case 'presence':
        this.receivePresence(frame);
        return;
      case undefined:
        break;
      default:
        if (ROOM_EVENTS.has(frame.event)) this.emit(frame.event, frame);
        return;
    }
    if (typeof frame.error === 'string') {
      this.refused(frame);
    } else if (typeof frame.id === 'number') {
      if (typeof frame.nonce === 'string' && this.pendingMessages.delete(frame.nonce)) {
        this.emit('sent', { nonce: frame.nonce, id: frame.id });
      }
      // The sender of a nonce published twice gets the first copy again: seen already.
      if (frame.id <= this.lastId) return;
      this.lastId = frame.id;
      this.emit('message', frame);
    }
  }

  receivePresence(frame) {
    if (!Array.isArray(frame.users) && this.presenceHeld) {
      this.presenceHeld.push(frame);
      return;
    }
    this.applyPresence(frame);
    // More joined or left than one event lists: the whole list again.
    if (frame.truncated === true && !Array.isArray(frame.users)) this.rereadPresence();
  }

  applyPresence(frame) {
    const joined = [];
    const left = [];
    const onJoin = (key, user) => joined.push(user);
    const onLeave = (key, user) => left.push(user);
    this.presence = Array.isArray(frame.users)
      ? syncState(this.presence, frame, onJoin, onLeave)
      : syncDiff(this.presence, frame, onJoin, onLeave);
    this.emit('presence', { state: this.presence, joined, left, frame });
  }

  async rereadPresence() {
    if (this.presenceHeld || !this.fetch) return;
    this.presenceHeld = [];
    try {
      const answer = await this.http('GET', `/chat/presence/?room=${encodeURIComponent(this.room)}`);
      this.applyPresence({ ...answer, event: 'presence' });
    } catch {
      // The next truncated change asks again; the changes held still apply.
    }
    const held = this.presenceHeld;
    this.presenceHeld = null;
    for (const frame of held) this.applyPresence(frame);
  }

  // ---- publishing ----

  /** Publishes `message` (any JSON value); `replyTo`: the id it answers. Answers its nonce. It
   * is pending until the server has stored it (`sent`, then `message`), sent again after a
   * reconnect, and stored once. Throws past `maxPending` or `maxMessageBytes`. */
  send(message, { replyTo, nonce = newNonce() } = {}) {
    if (this.stopped) throw new Error('livechat: the client is closed');
    if (this.pendingMessages.size >= this.maxPending) {
      throw new Error(`livechat: ${this.pendingMessages.size} messages are waiting to be stored already`);
    }
    const body = { message };
    if (typeof replyTo === 'number') body.reply_to = replyTo;
    const bytes = new TextEncoder().encode(JSON.stringify({ ...body, nonce })).length;
    if (bytes > this.maxMessageBytes) {
      throw new RangeError(`livechat: the message is ${bytes} bytes, the server takes at most ${this.maxMessageBytes}`);
    }
    this.pendingMessages.set(nonce, { body, bytes, sentOn: null });
    // While earlier ones wait to go again (rate limited), it waits with them, behind them.
    if (this.caughtUp && this.resendTimer === null) this.transmit(nonce);
    return nonce;
  }

  transmit(nonce) {
    const entry = this.pendingMessages.get(nonce);
    const connection = this.connection;
    if (!entry || !connection) return;
    entry.sentOn = connection;
    if (connection.kind === 'websocket') {
      connection.socket.send(JSON.stringify({ ...entry.body, nonce }));
      return;
    }
    const body = { ...entry.body, nonce, room: this.room };
    if (!this.token && this.name) body.name = this.name;
    this.http('POST', '/chat/send/', body).then(
      (answer) => {
        if (this.pendingMessages.delete(nonce)) this.emit('sent', { nonce, id: answer.id });
      },
      (error) => {
        const refusal = httpRefusal(error, 'message', nonce);
        // No answer, or the server cannot store now: it goes again shortly (stored once).
        if (refusal.retry) this.scheduleResend(backoffDelay(0, this.backoff));
        else this.refused(refusal);
      },
    );
  }

  /** Sends the pending messages not sent on this connection yet, or all (`again`). */
  flushPending(again) {
    for (const [nonce, entry] of this.pendingMessages) {
      if (again || entry.sentOn !== this.connection) this.transmit(nonce);
    }
  }

  /** An error frame (or HTTP refusal): told as `refused` (`ratelimited` for a publish that waits
   * and goes again); a refused publish is no longer pending. */
  refused(frame) {
    const kind = frame.for ?? 'message';
    if (typeof frame.retry_after_ms === 'number') {
      this.emit('ratelimited', { kind, ms: frame.retry_after_ms, frame });
      if (kind === 'message') this.scheduleResend(frame.retry_after_ms);
      return;
    }
    if (kind !== 'message') {
      this.emit('refused', { kind, error: frame.error, id: frame.id, frame });
      return;
    }
    let nonce = typeof frame.nonce === 'string' && this.pendingMessages.has(frame.nonce) ? frame.nonce : null;
    // Without a nonce to go by (an older server): publishes are answered in order.
    if (nonce === null) {
      for (const [pendingNonce, entry] of this.pendingMessages) {
        if (entry.sentOn === this.connection) {
          nonce = pendingNonce;
          break;
        }
      }
    }
    this.giveUp(nonce, frame.error, frame);
  }

  scheduleResend(ms) {
    if (this.resendTimer !== null) return;
    this.resendTimer = setTimeout(() => {
      this.resendTimer = null;
      if (this.caughtUp) this.flushPending(true);
    }, Math.max(0, ms));
  }

  /** The server closed with 1009: the largest message sent on that connection was too large. */
  refuseLargest(connection) {
    let largest = null;
    for (const [nonce, entry] of this.pendingMessages) {
      if (entry.sentOn === connection && (!largest || entry.bytes > largest[1].bytes)) largest = [nonce, entry];
    }
    if (largest) this.giveUp(largest[0], 'the server refused this message as over its size limit', {});
  }

  giveUp(nonce, error, frame) {
    const entry = nonce === null ? undefined : this.pendingMessages.get(nonce);
    if (nonce !== null) this.pendingMessages.delete(nonce);
    this.emit('refused', { kind: 'message', error, nonce: nonce ?? undefined, body: entry?.body, frame });
  }

  // ---- the rest of a message's life ----

  /** One request: a frame on the WebSocket, or its HTTP route over SSE. Answers whether it went
   * (not while reconnecting); a refusal comes as `refused` with its `kind`. */
  request(kind, frame, method, path, body) {
    if (!this.caughtUp || !this.connection) return false;
    if (this.connection.kind === 'websocket') {
      this.connection.socket.send(JSON.stringify(frame));
      return true;
    }
    this.http(method, path, body).catch((error) => this.refused(httpRefusal(error, kind, undefined, frame)));
    return true;
  }

  messagePath(id) {
    return `/chat/history/${encodeURIComponent(this.room)}/${id}`;
  }

  /** Replaces message `id`'s content (its author, or a moderator). */
  edit(id, message) {
    return this.request('edit', { edit: id, message }, 'PATCH', this.messagePath(id), { message });
  }

  /** Deletes message `id` (its author, or a moderator). */
  delete(id) {
    return this.request('delete', { delete: id }, 'DELETE', this.messagePath(id));
  }

  react(id, emoji) {
    return this.request('react', { react: id, emoji }, 'POST', `${this.messagePath(id)}/reactions`, { emoji });
  }

  unreact(id, emoji) {
    return this.request('react', { unreact: id, emoji }, 'DELETE',
      `${this.messagePath(id)}/reactions/${encodeURIComponent(emoji)}`);
  }

  /** Moves this user's read position to `id` (forward only); sent once live if not now. */
  read(id) {
    this.readWanted = Math.max(this.readWanted ?? 0, id);
    const wanted = this.readWanted;
    if (this.request('read', { read: wanted }, 'POST', '/chat/read/', { room: this.room, id: wanted })) {
      this.readWanted = null;
    }
  }

  /** Tells the room this user is typing (at most every 2.2 s; needs a name or a token; not over
   * SSE, which has no route for it). Answers whether it was sent. */
  typing() {
    if (!this.caughtUp || this.connection?.kind !== 'websocket') return false;
    const now = Date.now();
    if (now - this.lastTypingSent < TYPING_EVERY_MS) return false;
    this.lastTypingSent = now;
    this.connection.socket.send('{"typing":true}');
    return true;
  }

  /** The caller holds the room up to `id` (it read that history itself, in `epoch`): the
   * connections resume after it, and the messages up to it are not told again. */
  resumeAfter(id, epoch) {
    this.advance(id, epoch);
    this.resumable = true;
  }

  /** A new chosen name (auth off): once connecting, the connection is opened again under it. */
  rename(name) {
    this.name = name || null;
    if (this.connection && !this.stopped) this.open();
  }

  /** A fresh token for the same user: the WebSocket takes it (the `token` event says so); a
   * stream cannot, so it reconnects with it. */
  refreshToken(token) {
    this.token = token;
    if (this.connection?.kind === 'websocket' && this.connection.socket.readyState === 1) {
      this.connection.socket.send(JSON.stringify({ token }));
    } else if (this.connection?.kind === 'sse') {
      this.open();
    }
  }

  // ---- HTTP ----

  /** A page of the room's history: `{ limit, before, after }` as `GET /chat/history/`. */
  history({ limit, before, after } = {}) {
    const params = new URLSearchParams({ room: this.room });
    if (limit !== undefined) params.set('limit', String(limit));
    if (before !== undefined) params.set('before', String(before));
    if (after !== undefined) params.set('after', String(after));
    return this.http('GET', `/chat/history/?${params}`);
  }

  /** One HTTP request to the server, with the token (or, auth off, the chosen name); the JSON
   * answer, or an Error with `status` and the server's `body`. */
  async http(method, path, body) {
    if (!this.fetch) throw new TypeError('livechat: no fetch implementation');
    const headers = {};
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    let url = `${this.bases.http}${path}`;
    if (!this.token && this.name && path !== '/chat/send/') {
      url += `${path.includes('?') ? '&' : '?'}name=${encodeURIComponent(this.name)}`;
    }
    const response = await this.fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    let answer = {};
    try {
      answer = text ? JSON.parse(text) : {};
    } catch {
      answer = { error: text };
    }
    if (!response.ok) {
      const error = new Error(answer.error ?? `HTTP ${response.status}`);
      error.status = response.status;
      error.body = answer;
      throw error;
    }
    return answer;
  }
}

/** An HTTP refusal in the shape of an error frame; `retry` for a failure that is no answer
 * (network) or a server that cannot store now (503): the request goes again. */
function httpRefusal(error, kind, nonce, frame) {
  const body = error.body ?? {};
  const refusal = { ...body, error: body.error ?? String(error.message ?? error), for: kind };
  if (nonce !== undefined) refusal.nonce = nonce;
  if (frame && typeof frame === 'object') {
    const id = frame.edit ?? frame.delete ?? frame.react ?? frame.unreact;
    if (typeof id === 'number') refusal.id = id;
  }
  if (error.status === undefined || error.status === 503) refusal.retry = true;
  if (error.status === 429 && typeof body.retry_after_ms !== 'number') refusal.retry_after_ms = 1000;
  return refusal;
}

/** `new LivechatClient(options)`, connected. */
export function connect(options) {
  const client = new LivechatClient(options);
  client.connect();
  return client;
}
