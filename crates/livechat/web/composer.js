// What the user writes: the composer (a new message, a reply, or an edit of one's own), the
// checks before sending (the server's size limit), what happens to a message the server refuses
// (back into the composer with the reason; sent again when refused for its rate), "typing"
// notices, and the reaction picker.

import { $, button, displayName, MAX_MESSAGE_BYTES, untilText } from './common.js';
import { RoomClient, TOO_LARGE } from './client.js';
import { textOf } from './timeline.js';

/** `{"typing": true}` goes out at most this often. The server passes one per user per 2 s and
 * absorbs the others: a little over 2 s, so that a frame arriving a few ms early is not lost. */
const TYPING_SEND_EVERY_MS = 2200;
/** The reactions offered at once (any other can be typed). */
export const COMMON_EMOJI = ['👍', '❤️', '😂', '🎉', '😮', '😢'];
/** The server's limit for one reaction. */
const MAX_EMOJI_BYTES = 16;

/** Why a muted or banned user may not do something, in words. */
export function barredText({ error, reason, until }) {
  const why = reason ? `: ${reason}` : '';
  const verb = error === 'banned' ? 'You are banned from this room' : 'You are muted here';
  return `${verb}${why} (${untilText(until)}).`;
}

export class Composer {
  constructor(view) {
    this.view = view;
    this.client = view.client;
    this.input = $('message-input');
    /** null, `{ reply: record }` or `{ edit: record }`. */
    this.mode = null;
    this.lastTypingSent = 0;
    this.typingLater = null;
    /** A "Sending too fast" notice is up until a message goes through. */
    this.rateLimited = false;
  }

  start() {
    const form = $('send-form');
    const input = this.input;
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.submit();
    });
    input.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        form.requestSubmit();
      } else if (event.key === 'Escape' && this.mode) {
        // Out of replying or editing; what is typed stays (but an edit's text, which was the
        // message's own).
        event.preventDefault();
        this.cancel();
      }
    });
    input.addEventListener('input', () => {
      this.fit();
      this.typed();
    });
    $('mode-cancel').addEventListener('click', () => this.cancel());
    input.focus();
  }

  submit() {
    if (this.view.stopped) return;
    const text = this.input.value;
    if (!text.trim()) return;
    const editing = this.mode?.edit;
    const replyTo = this.mode?.reply?.id;
    const body = editing ? { edit: editing.id, message: text } : { message: text, ...(replyTo ? { reply_to: replyTo } : {}) };
    // The frame as it will be sent, in UTF-8 bytes.
    const bytes = new TextEncoder().encode(editing ? JSON.stringify(body) : RoomClient.publishFrame(body)).length;
    if (bytes > MAX_MESSAGE_BYTES) {
      this.error(`Too long to send: ${bytes} bytes, the server takes at most ${MAX_MESSAGE_BYTES}. `
        + 'Shorten it, or split it in several messages.');
      this.input.focus();
      return;
    }
    if (editing) {
      if (!this.client.send(body)) {
        this.error('Not connected: the edit can be saved once the page is connected again.');
        return;
      }
    } else {
      // Paged back: the conversation's end comes back, where the message goes.
      if (this.view.timeline.detached) this.view.timeline.showNewest();
      const nonce = this.client.publish(body, bytes);
      this.view.timeline.addPending(nonce, text, replyTo);
      this.view.timeline.removeUnreadLine();
    }
    this.error('');
    this.doneTyping();
    this.setMode(null);
    this.input.value = '';
    this.fit();
    this.input.focus();
  }

  /** Replying to `record` (a message shown). */
  replyTo(record) {
    this.setMode({ reply: record });
    this.input.focus();
  }

  /** Editing `record` (one's own message): its text in the composer. */
  edit(record) {
    if (!this.mode?.edit) this.draft = this.input.value;
    this.setMode({ edit: record });
    this.input.value = textOf(record.message);
    this.fit();
    this.input.focus();
  }

  cancel() {
    if (this.mode?.edit) {
      this.input.value = this.draft ?? '';
      this.fit();
    }
    this.setMode(null);
    this.input.focus();
  }

  setMode(mode) {
    this.mode = mode;
    const bar = $('composer-mode');
    const what = $('mode-text');
    if (mode?.reply) {
      what.textContent = `Replying to ${displayName(mode.reply.user)}: ${textOf(mode.reply.message).split('\n', 1)[0]}`;
    } else if (mode?.edit) {
      what.textContent = 'Editing your message (Escape: cancel)';
    }
    bar.hidden = !mode;
    $('send-button').textContent = mode?.edit ? 'Save' : 'Send';
  }

  /** A publish refused by the server: back into the composer with the reason (never lost:
   * whatever was typed since stays, after it). */
  refused({ error, body, frame }) {
    const text = body ? textOf(body.message) : null;
    if (text !== null) {
      const input = this.input;
      input.value = input.value.trim() ? `${text}\n${input.value}` : text;
      this.fit();
      input.focus();
    }
    if (error === 'muted' || error === 'banned') {
      this.error(`Not sent. ${barredText(frame)}`);
    } else {
      this.error(error === TOO_LARGE ? error : `Not sent: ${error}`);
    }
  }

  ratelimited({ ms }) {
    const seconds = Math.max(1, Math.ceil(ms / 1000));
    this.view.notify(`Sending too fast: your message goes out again in ${seconds} s.`);
    this.rateLimited = true;
  }

  /** A message of ours was stored: "Sending too fast" is old news. */
  sent() {
    if (this.rateLimited) {
      this.rateLimited = false;
      this.view.hideNotice();
    }
  }

  error(reason) {
    const error = $('composer-error');
    error.textContent = reason;
    error.hidden = !reason;
  }

  /** The composer grows with its text, up to its CSS max-height; then it scrolls. */
  fit() {
    const input = this.input;
    input.style.height = 'auto';
    const borders = input.offsetHeight - input.clientHeight;
    input.style.height = `${input.scrollHeight + borders}px`;
  }

  /** Tells the room this user is typing: at most every TYPING_SEND_EVERY_MS, with a name, live.
   * Keys pressed meanwhile send one more when the interval is over (still typing, then). */
  typed() {
    if (!this.view.socketNamed || !this.client.caughtUp || !this.input.value.trim() || this.mode?.edit) return;
    const wait = this.lastTypingSent + TYPING_SEND_EVERY_MS - Date.now();
    if (wait > 0) {
      this.typingLater ??= setTimeout(() => {
        this.typingLater = null;
        this.typed();
      }, wait);
      return;
    }
    if (this.client.send({ typing: true })) this.lastTypingSent = Date.now();
  }

  /** A message sent: what was typed is said; no "typing" left to tell. */
  doneTyping() {
    clearTimeout(this.typingLater);
    this.typingLater = null;
  }
}

/** The reaction picker: six common emoji and any other typed in, for one message at a time;
 * opened beside the message's "React" button, closed by Escape or a click elsewhere (the focus
 * goes back to that button). */
export class ReactionPicker {
  constructor(onPick) {
    this.onPick = onPick;
    this.box = $('reaction-picker');
    this.opener = null;
    this.id = null;
  }

  start() {
    const choices = $('reaction-choices');
    choices.replaceChildren(...COMMON_EMOJI.map((emoji) => {
      const choice = button(emoji, { label: `React with ${emoji}`, className: 'emoji-choice' });
      choice.addEventListener('click', () => this.pick(emoji));
      return choice;
    }));
    $('reaction-form').addEventListener('submit', (event) => {
      event.preventDefault();
      const input = $('reaction-input');
      const emoji = input.value.trim();
      const hint = $('reaction-error');
      if (!emoji) return;
      if (new TextEncoder().encode(emoji).length > MAX_EMOJI_BYTES) {
        hint.textContent = `At most ${MAX_EMOJI_BYTES} bytes: one emoji or a short word.`;
        hint.hidden = false;
        input.focus();
        return;
      }
      input.value = '';
      this.pick(emoji);
    });
    this.box.addEventListener('keydown', (event) => {
      if (event.key === 'Escape') {
        event.preventDefault();
        this.close();
      }
    });
    document.addEventListener('pointerdown', (event) => {
      if (!this.box.hidden && !this.box.contains(event.target) && event.target !== this.opener) this.close();
    });
  }

  /** Opens for message `id`, under `opener` (its "React" button). */
  open(id, opener) {
    if (!this.box.hidden && this.id === id) {
      this.close();
      return;
    }
    this.id = id;
    this.opener = opener;
    opener.setAttribute('aria-expanded', 'true');
    $('reaction-error').hidden = true;
    // In the message, after its actions: it scrolls with it and is next in the tab order.
    opener.closest('.body').append(this.box);
    this.box.hidden = false;
    this.box.querySelector('button').focus();
  }

  pick(emoji) {
    const id = this.id;
    this.close();
    this.onPick(id, emoji);
  }

  close() {
    if (this.box.hidden) return;
    this.box.hidden = true;
    this.opener?.setAttribute('aria-expanded', 'false');
    if (this.box.contains(document.activeElement) || document.activeElement === document.body) this.opener?.focus();
    document.body.append(this.box);
    this.id = null;
  }
}
