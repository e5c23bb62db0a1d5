// The protocol: one room's WebSocket, kept open and resumed, and the messages this tab publishes
// until the server has stored them. Nothing here touches the page: it tells what happens as
// events (a small surface, so that a shared client library can take its place).
//
// The socket asks for `?meta=1` (every frame carries its id and author), `presence=1` (who is
// here, typing) and, once history is read, `since=` the last id seen with the room's epoch: the
// server sends whatever was published since, then live messages, so nothing is missing and
// nothing doubled; the same after every reconnect (0.5 s, doubling to 5 s).
//
// Each message is published with a nonce and kept as pending until its stored copy comes back
// (same nonce); pending ones are sent again after a reconnect (same nonce: stored once). An
// error frame says which publish it refuses (`nonce`); one refused for its rate waits and goes
// again; a close 1009 refuses the largest message sent on that socket.
//
// Events (CustomEvent, `detail` as below):
//   connecting {again}        a socket is opening (again: a reconnect)
//   live {}                   caught up: what follows is live
//   down {code, reason}       the socket closed; it reconnects by itself
//   stopped {code, reason}    closed for good: 4001 (token expired), 4003 banned, 4004
//   message FRAME             a stored message (its pending copy, if ours, is forgotten)
//   edited, deleted, reaction, reactions, read, seen, presence, typing, gap, reset  FRAME
//   ratelimited {ms}          a publish was refused for its rate: it goes again after ms
//   refused {kind, error, nonce?, body?, id?, frame}  an error frame (or 1009), for `kind`
//                             ('message', 'edit', 'delete', 'react', 'read', 'typing', ...);
//                             a refused publish is no longer pending

const RETRY_FIRST_MS = 500;
const RETRY_MAX_MS = 5000;
/** Pending messages (written here, not yet stored) kept at most. */
const MAX_PENDING = 500;
export const TOO_LARGE = 'Too long: the server refused this message as over its size limit.';

/** A nonce for one message: a UUID v4 (crypto.randomUUID exists only in secure contexts; the
 * same from random bytes elsewhere). */
export function newNonce() {
  if (typeof crypto.randomUUID === 'function') return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

const EVENTS = new Set(['presence', 'typing', 'gap', 'reset', 'edited', 'deleted', 'reaction', 'reactions', 'read', 'seen']);

export class RoomClient extends EventTarget {
  /** `room`; `credentials()`: `{ token }` or `{ name }` for the next connection; `resumable()`:
   * whether the page holds the history to resume from. */
  constructor(room, { credentials, resumable }) {
    super();
    this.room = room;
    this.credentials = credentials;
    this.resumable = resumable;
    /** The last id seen (or skipped by a gap), and the epoch it counts in: where to resume. */
    this.lastId = 0;
    this.epoch = null;
    this.socket = null;
    this.resuming = false;
    this.caughtUp = false;
    this.stopped = false;
    this.retryMs = RETRY_FIRST_MS;
    this.retryTimer = null;
    this.resendTimer = null;
    /** nonce -> { body, bytes, sentOn }: published here, not yet stored. */
    this.pending = new Map();
  }

  emit(type, detail = {}) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  /** Ids up to `id` are seen (from history too): resume after them. */
  advance(id, epoch) {
    if (epoch) this.epoch = epoch;
    if (typeof id === 'number') this.lastId = Math.max(this.lastId, id);
  }

  /** A fresh start (after a reset): resume from `last`. */
  restart(last, epoch) {
    this.lastId = typeof last === 'number' ? last : 0;
    if (epoch) this.epoch = epoch;
  }

  get open() {
    return this.socket?.readyState === WebSocket.OPEN;
  }

  connect() {
    if (this.stopped) return;
    clearTimeout(this.retryTimer);
    const previous = this.socket;
    this.caughtUp = false;
    this.emit('connecting', { again: Boolean(previous) });
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const params = new URLSearchParams({ meta: '1', presence: '1' });
    // Resume from what is shown. With no history read yet and nothing received, there is
    // nothing to resume from: live messages only, the history is read meanwhile.
    this.resuming = this.resumable() || this.lastId > 0;
    if (this.resuming) {
      params.set('since', String(this.lastId));
      if (this.epoch) params.set('epoch', this.epoch);
    }
    const { token, name } = this.credentials();
    if (token) params.set('token', token);
    else if (name) params.set('name', name);
    const socket = new WebSocket(`${scheme}://${location.host}/ws/chat/${encodeURIComponent(this.room)}/?${params}`);
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
      const { code, reason } = event;
      // Closed for good: retrying would not help (or is not wanted).
      if (code === 4001 || code === 4004 || (code === 4003 && reason.startsWith('banned'))) {
        this.stop();
        this.emit('stopped', { code, reason });
        return;
      }
      if (code === 1009) this.refuseLargest(socket);
      this.emit('down', { code, reason });
      this.retryTimer = setTimeout(() => this.connect(), this.nextRetry());
    });
  }

  nextRetry() {
    const wait = this.retryMs;
    this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
    return wait;
  }

  stop() {
    this.stopped = true;
    this.caughtUp = false;
    clearTimeout(this.retryTimer);
    clearTimeout(this.resendTimer);
    if (this.socket && this.socket.readyState <= WebSocket.OPEN) this.socket.close(1000, 'leaving');
  }

  /** The socket is live: sent its replay (`caught_up`), or opened without one. */
  live({ epoch, id }) {
    this.advance(id, epoch);
    this.caughtUp = true;
    this.retryMs = RETRY_FIRST_MS;
    this.flushPending(false);
    this.emit('live');
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
    } else if (frame.event === 'gap') {
      if (typeof frame.to === 'number') this.advance(frame.to);
      this.emit('gap', frame);
    } else if (frame.event === 'reset') {
      this.restart(frame.last, frame.epoch);
      this.emit('reset', frame);
    } else if (EVENTS.has(frame.event)) {
      this.emit(frame.event, frame);
    } else if (typeof frame.error === 'string') {
      this.refused(frame);
    } else if (typeof frame.id === 'number' && frame.event === undefined) {
      this.advance(frame.id);
      if (typeof frame.nonce === 'string') this.pending.delete(frame.nonce);
      this.emit('message', frame);
    }
  }

  /** Sends `frame` if the socket is open; whether it went. */
  send(frame) {
    if (!this.open) return false;
    this.socket.send(JSON.stringify(frame));
    return true;
  }

  /** Publishes `body` (`{message, reply_to?}`): pending until stored; its nonce. */
  publish(body, bytes) {
    const nonce = newNonce();
    this.pending.set(nonce, { body, bytes, sentOn: null });
    if (this.pending.size > MAX_PENDING) this.pending.delete(this.pending.keys().next().value);
    this.transmit(nonce);
    return nonce;
  }

  /** The frame of a publish as it goes out (for its size: a nonce is always 36 characters). */
  static publishFrame(body) {
    return JSON.stringify({ ...body, nonce: newNonce() });
  }

  transmit(nonce) {
    const entry = this.pending.get(nonce);
    const socket = this.socket;
    if (!entry || socket?.readyState !== WebSocket.OPEN) return;
    socket.send(JSON.stringify({ ...entry.body, nonce }));
    entry.sentOn = socket;
  }

  /** Sends the pending messages: those not sent on this socket yet, or all (`again`). */
  flushPending(again) {
    for (const [nonce, entry] of this.pending) {
      if (again || entry.sentOn !== this.socket) this.transmit(nonce);
    }
  }

  /** Everything pending goes again once live (after the room's history was reset). */
  resendAll() {
    if (this.caughtUp) this.flushPending(true);
  }

  /** Once the rate limit allows it, the pending messages go out again (one timer at a time). */
  scheduleResend(ms) {
    if (this.resendTimer !== null) return;
    this.resendTimer = setTimeout(() => {
      this.resendTimer = null;
      if (this.caughtUp) this.flushPending(true);
    }, Math.max(0, ms));
  }

  /** An error frame. It says what it answers (`for`) and, for a publish, which one (`nonce`). */
  refused(frame) {
    const kind = frame.for ?? 'message';
    if (kind !== 'message') {
      this.emit('refused', { kind, error: frame.error, id: frame.id, frame });
      return;
    }
    if (this.pending.size === 0) return;
    if (typeof frame.retry_after_ms === 'number') {
      this.scheduleResend(frame.retry_after_ms);
      this.emit('ratelimited', { ms: frame.retry_after_ms });
      return;
    }
    const { nonce } = frame;
    const entry = typeof nonce === 'string' && this.pending.has(nonce) ? [nonce, this.pending.get(nonce)] : this.oldestSentHere();
    this.giveUp(entry, frame.error, frame);
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
  refuseLargest(socket) {
    let largest = null;
    for (const entry of this.pending) {
      if (entry[1].sentOn === socket && (!largest || entry[1].bytes > largest[1].bytes)) largest = entry;
    }
    this.giveUp(largest, TOO_LARGE, {});
  }

  giveUp(entry, error, frame) {
    if (entry) this.pending.delete(entry[0]);
    this.emit('refused', { kind: 'message', error, nonce: entry?.[0], body: entry?.[1].body, frame });
  }
}
