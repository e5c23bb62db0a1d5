// A message's life in the chat page, in Chromium: replies, edits, deletions, reactions, a
// moderator's actions, unread badges and the "New messages" line, direct messages. Two users on
// two livechat nodes sharing one redis-server (the Redis engine), auth required (tokens from the
// binary's `token` subcommand).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  artifacts, connected, open, RedisServer, root, say, SECRET, Server, setHidden, token, until, WAIT,
} from './harness.mjs';

let redis;
let nodes = [];

before(async () => {
  redis = await RedisServer.start();
  const args = ['--redis-url', redis.url, '--auth', 'required', '--jwt-secret', SECRET];
  nodes = [await Server.start({ args }), await Server.start({ args })];
});

after(async () => {
  for (const node of nodes) await node.stop();
  await redis?.stop();
});

const ALICE = token('alice', 'Alice');
const BOB = token('bob', 'Bob');
const CAROL = token('carol', 'Carol');
const MODERATOR = token('mo', 'Mo', '--moderate');

/** A message's element, by its text (not by a reply's quote of it). */
function item(page, text) {
  return page.locator('#log li.message').filter({ has: page.locator('p.text', { hasText: text }) });
}

/** Publishes over HTTP as the token's user; the stored message's id. */
async function post(server, bearer, room, message, extra = {}) {
  const response = await fetch(`${server.url}/chat/send/`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${bearer}` },
    body: JSON.stringify({ room, message, ...extra }),
  });
  assert.equal(response.status, 200, await response.clone().text());
  return (await response.json()).id;
}

async function history(server, bearer, room) {
  const response = await fetch(`${server.url}/chat/history/?room=${encodeURIComponent(room)}&limit=1000`, {
    headers: { Authorization: `Bearer ${bearer}` },
  });
  return (await response.json()).chat_history;
}

/** Waits until `page` shows reaction `emoji` on the message `text` with `count`, pressed or not. */
async function reactionShown(page, text, emoji, count, pressed) {
  const button = item(page, text).locator('button.reaction', { hasText: emoji });
  await until(async () => (await button.count()) === 1
    && (await button.locator('.count').textContent()) === String(count)
    && (await button.getAttribute('aria-pressed')) === String(pressed), `${emoji} ${count} (${pressed ? 'mine' : 'not mine'}) on "${text}"`);
}

async function pick(page, text, emoji) {
  await item(page, text).getByRole('button', { name: /^React to/ }).click();
  const picker = page.locator('#reaction-picker');
  await picker.waitFor(WAIT);
  await picker.getByRole('button', { name: `React with ${emoji}` }).click();
  await picker.waitFor({ state: 'hidden', ...WAIT });
}

test('two users on two nodes: each sees the other\'s replies, edits, deletions and reactions, live and in history', async () => {
  const [nodeA, nodeB] = nodes;
  const opened = [];
  try {
    const alice = await open(nodeA, `/r/garden#token=${ALICE}`);
    const bob = await open(nodeB, `/r/garden#token=${BOB}`);
    opened.push(alice, bob);
    await connected(alice.page);
    await connected(bob.page);

    await say(alice.page, 'Who waters the plants?');
    await item(bob.page, 'Who waters the plants?').waitFor(WAIT);

    // Bob replies: a quoted line above his answer, on both pages.
    await item(bob.page, 'Who waters the plants?').getByRole('button', { name: 'Reply to Alice' }).click();
    await bob.page.locator('#composer-mode', { hasText: 'Replying to Alice: Who waters the plants?' }).waitFor(WAIT);
    assert.equal(await bob.page.evaluate(() => document.activeElement.id), 'message-input');
    await say(bob.page, 'I do, on Mondays.');
    for (const { page } of [alice, bob]) {
      const reply = item(page, 'I do, on Mondays.');
      await reply.waitFor(WAIT);
      assert.equal(await reply.locator('.quote').textContent(), 'Alice: Who waters the plants?');
    }
    assert.equal(await bob.page.locator('#composer-mode').isHidden(), true, 'back to a plain message');

    // Reactions: Bob picks one of the six; Alice adds hers by pressing the count; Alice types
    // her own. Each page highlights its own.
    await pick(bob.page, 'Who waters the plants?', '👍');
    await reactionShown(alice.page, 'Who waters the plants?', '👍', 1, false);
    await reactionShown(bob.page, 'Who waters the plants?', '👍', 1, true);
    await item(alice.page, 'Who waters the plants?').locator('button.reaction', { hasText: '👍' }).click();
    await reactionShown(alice.page, 'Who waters the plants?', '👍', 2, true);
    await reactionShown(bob.page, 'Who waters the plants?', '👍', 2, true);
    await item(alice.page, 'I do, on Mondays.').getByRole('button', { name: /^React to/ }).click();
    await alice.page.fill('#reaction-input', '🌱');
    await alice.page.press('#reaction-input', 'Enter');
    await reactionShown(bob.page, 'I do, on Mondays.', '🌱', 1, false);
    await reactionShown(alice.page, 'I do, on Mondays.', '🌱', 1, true);
    // Taken back: Bob presses his again.
    await pick(bob.page, 'Who waters the plants?', '🎉');
    await reactionShown(alice.page, 'Who waters the plants?', '🎉', 1, false);
    await item(bob.page, 'Who waters the plants?').locator('button.reaction', { hasText: '🎉' }).click();
    await until(async () => (await item(alice.page, 'Who waters the plants?').locator('button.reaction').count()) === 1,
      'the 🎉 gone for Alice');

    // Alice edits her question: the new text, marked "edited", everywhere. Only authors are
    // offered Edit.
    assert.equal(await item(bob.page, 'Who waters the plants?').getByRole('button', { name: 'Edit your message' }).count(), 0);
    await item(alice.page, 'Who waters the plants?').getByRole('button', { name: 'Edit your message' }).click();
    assert.equal(await alice.page.inputValue('#message-input'), 'Who waters the plants?');
    await alice.page.fill('#message-input', 'Who waters the plants this week?');
    await alice.page.press('#message-input', 'Enter');
    for (const { page } of [alice, bob]) {
      await item(page, 'Who waters the plants this week?').locator('.edited', { hasText: '(edited)' }).waitFor(WAIT);
      // The reply's quote follows the edit.
      await item(page, 'I do, on Mondays.').locator('.quote', { hasText: 'this week?' }).waitFor(WAIT);
    }
    await reactionShown(bob.page, 'Who waters the plants this week?', '👍', 2, true);

    // A message Bob answers, then Alice deletes: "message deleted" in its place and in the quote.
    await say(alice.page, 'The hose is broken');
    await item(bob.page, 'The hose is broken').getByRole('button', { name: 'Reply to Alice' }).click();
    await say(bob.page, 'I will bring mine.');
    await item(alice.page, 'I will bring mine.').waitFor(WAIT);
    await item(alice.page, 'The hose is broken').getByRole('button', { name: 'Delete your message' }).click();
    const dialog = alice.page.locator('#delete-dialog');
    await dialog.waitFor(WAIT);
    await dialog.getByRole('button', { name: 'Delete' }).click();
    for (const { page } of [alice, bob]) {
      await page.locator('#log li.message.deleted', { hasText: 'message deleted' }).waitFor(WAIT);
      await item(page, 'I will bring mine.').locator('.quote.gone', { hasText: 'message deleted' }).waitFor(WAIT);
      assert.equal(await item(page, 'The hose is broken').count(), 0);
    }

    // History (a page opened now, on the other node) agrees with what was seen live.
    const late = await open(nodeA, `/r/garden#token=${CAROL}`);
    opened.push(late);
    await connected(late.page);
    await item(late.page, 'Who waters the plants this week?').locator('.edited').waitFor(WAIT);
    await reactionShown(late.page, 'Who waters the plants this week?', '👍', 2, false);
    await reactionShown(late.page, 'I do, on Mondays.', '🌱', 1, false);
    await late.page.locator('#log li.message.deleted', { hasText: 'message deleted' }).waitFor(WAIT);
    assert.equal(await item(late.page, 'I do, on Mondays.').locator('.quote').textContent(), 'Alice: Who waters the plants this week?');
    assert.equal(await item(late.page, 'I will bring mine.').locator('.quote').textContent(), 'In reply to message deleted');
    const stored = await history(nodeB, BOB, 'garden');
    assert.ok(stored.some((m) => m.deleted === true && m.message === undefined), 'the deleted text is gone from storage');

    // Pointed at, a message shows what one may do with it.
    await item(alice.page, 'I do, on Mondays.').hover();
    await alice.page.screenshot({ path: join(artifacts, 'chat-conversation.png') });
    if (process.env.UPDATE_SCREENSHOT) copyFileSync(join(artifacts, 'chat-conversation.png'), join(root, 'docs', 'chat-conversation.png'));
    for (const { problems } of opened) assert.deepEqual(problems, []);
  } finally {
    for (const { close } of opened) await close();
  }
});

test('a reply to a message not on the page: its quote is read, and a click pages back to the original', async () => {
  const [nodeA, nodeB] = nodes;
  const original = await post(nodeA, ALICE, 'archive', 'The key is under the mat');
  for (let n = 1; n <= 150; n += 10) {
    await Promise.all(Array.from({ length: 10 }, (_, k) => post(nodeB, BOB, 'archive', `filler ${n + k}`)));
  }
  await post(nodeB, BOB, 'archive', 'Which mat?', { reply_to: original });
  const { page, problems, close } = await open(nodeB, `/r/archive#token=${CAROL}`);
  try {
    await connected(page);
    const quote = item(page, 'Which mat?').locator('.quote');
    await quote.locator('.quote-text', { hasText: 'The key is under the mat' }).waitFor(WAIT);
    assert.equal(await item(page, 'The key is under the mat').count(), 0, 'not on the first page');
    await quote.focus();
    await page.keyboard.press('Enter');
    const target = item(page, 'The key is under the mat');
    await target.waitFor(WAIT);
    await until(() => target.evaluate((li) => document.activeElement === li), 'the original has the focus');
    assert.ok(await target.isVisible());
    assert.deepEqual(problems, []);
  } finally {
    await close();
  }
});

test('a moderator deletes and bans; the muted and the banned are told why, and until when', async () => {
  const [nodeA, nodeB] = nodes;
  const opened = [];
  try {
    const mo = await open(nodeA, `/r/square#token=${MODERATOR}`);
    const bob = await open(nodeB, `/r/square#token=${BOB}`);
    const carol = await open(nodeB, `/r/square#token=${CAROL}`);
    opened.push(mo, bob, carol);
    for (const { page } of opened) await connected(page);
    await say(mo.page, 'Be kind, everyone.');
    await say(bob.page, 'BUY CHEAP WATCHES');
    await say(carol.page, 'You are all fools');
    await item(mo.page, 'You are all fools').waitFor(WAIT);
    // A moderator sees delete and ban on others' messages; others do not.
    await item(mo.page, 'BUY CHEAP WATCHES').getByRole('button', { name: 'Ban or mute Bob' }).waitFor(WAIT);
    await item(bob.page, 'Be kind, everyone.').waitFor(WAIT);
    assert.equal(await item(bob.page, 'Be kind, everyone.').locator('.actions .moderate').count(), 0);
    assert.equal(await item(bob.page, 'You are all fools').getByRole('button', { name: /Delete/ }).count(), 0);

    await item(mo.page, 'BUY CHEAP WATCHES').getByRole('button', { name: 'Delete the message from Bob' }).click();
    await mo.page.locator('#delete-dialog').getByRole('button', { name: 'Delete' }).click();
    for (const { page } of opened) {
      await page.locator('#log li.message.deleted').waitFor(WAIT);
      assert.equal(await item(page, 'BUY CHEAP WATCHES').count(), 0);
    }

    // Carol is muted for an hour: she still reads, and is told why when she writes.
    await item(mo.page, 'You are all fools').getByRole('button', { name: 'Ban or mute Carol' }).click();
    const ban = mo.page.locator('#ban-dialog');
    await ban.waitFor(WAIT);
    await ban.getByLabel('Mute: they read, but may not write').check();
    await ban.getByLabel('For', { exact: true }).selectOption({ label: '1 hour' });
    await ban.getByLabel('Reason (told to them)').fill('Insults');
    await ban.getByRole('button', { name: 'Apply' }).click();
    await mo.page.locator('#notice', { hasText: 'Carol is muted in #square until' }).waitFor(WAIT);
    await say(carol.page, 'Why can I not talk?');
    await carol.page.locator('#composer-error', { hasText: 'You are muted here: Insults (until' }).waitFor(WAIT);
    assert.equal(await carol.page.inputValue('#message-input'), 'Why can I not talk?', 'the text is kept');
    await say(mo.page, 'Carol can still read this.');
    await item(carol.page, 'Carol can still read this.').waitFor(WAIT);

    // Bob is banned until lifted: his page stops and says why; opened again, it says so again.
    await say(bob.page, 'One more ad');
    await item(mo.page, 'One more ad').getByRole('button', { name: 'Ban or mute Bob' }).click();
    assert.equal(await ban.getByLabel('Ban: disconnect them, and keep them out').isChecked(), true, 'a ban by default');
    await ban.getByLabel('For', { exact: true }).selectOption({ label: 'Until lifted' });
    await ban.getByLabel('Reason (told to them)').fill('Spam');
    await mo.page.screenshot({ path: join(artifacts, 'chat-moderation.png') });
    await ban.getByRole('button', { name: 'Apply' }).click();
    const why = 'You are banned from this room: Spam (until a moderator lifts it).';
    await bob.page.locator('#access', { hasText: why }).waitFor(WAIT);
    await bob.page.locator('#status[data-state="stopped"]').waitFor(WAIT);
    const again = await open(nodeA, `/r/square#token=${BOB}`);
    opened.push(again);
    await again.page.locator('#access', { hasText: why }).waitFor(WAIT);
    if (process.env.UPDATE_SCREENSHOT) copyFileSync(join(artifacts, 'chat-moderation.png'), join(root, 'docs', 'chat-moderation.png'));
    for (const { problems } of [mo, carol]) assert.deepEqual(problems, []);
  } finally {
    for (const { close } of opened) await close();
  }
});

test('unread badges beside the room, a "New messages" line where the user stopped, cleared in a second tab', async () => {
  const [nodeA, nodeB] = nodes;
  const opened = [];
  try {
    const alice = await open(nodeA, `/r/north#token=${ALICE}`);
    opened.push(alice);
    await connected(alice.page);
    await post(nodeB, BOB, 'north', 'read this one');
    await item(alice.page, 'read this one').waitFor(WAIT);
    // Read as it is shown: her position is that message.
    await until(async () => {
      const answer = await (await fetch(`${nodeB.url}/chat/unread/`, { headers: { Authorization: `Bearer ${ALICE}` } })).json();
      return answer.rooms.some((r) => r.room === 'north' && r.unread === 0 && r.read_id > 0);
    }, 'her read position moved');

    // Elsewhere, while Bob writes three more in north.
    await alice.page.goto(`${nodeA.url}/r/south`);
    await connected(alice.page);
    for (const text of ['unread one', 'unread two', 'unread three']) await post(nodeB, BOB, 'north', text);
    await setHidden(alice.page, true);
    await setHidden(alice.page, false);
    const badge = alice.page.locator('#nav-rooms a[data-room="north"] .badge');
    await badge.waitFor(WAIT);
    assert.equal(await badge.textContent(), '3 unread');
    assert.equal(await alice.page.locator('#nav-rooms a[aria-current="page"]').textContent(), '#south');

    // Back in north: the line goes above the first she has not read.
    await alice.page.locator('#nav-rooms a[data-room="north"]').click();
    await alice.page.waitForURL(`${nodeA.url}/r/north`, WAIT);
    const line = alice.page.locator('#log li.unread-line');
    await line.waitFor(WAIT);
    assert.equal(await line.textContent(), 'New messages');
    const after = await line.evaluate((li) => li.nextElementSibling.querySelector('.text').textContent);
    assert.equal(after, 'unread one');
    const before = await line.evaluate((li) => li.previousElementSibling.querySelector('.text').textContent);
    assert.equal(before, 'read this one');
    await alice.page.screenshot({ path: join(artifacts, 'chat-unread.png') });

    // A second tab of hers, in south: north has nothing unread any more (she read it in the
    // first); a new message there shows up, and goes when the first tab reads it.
    const second = await open(nodeB, `/r/south#token=${ALICE}`);
    opened.push(second);
    await connected(second.page);
    await second.page.locator('#nav-rooms a[data-room="north"]').waitFor(WAIT);
    assert.equal(await second.page.locator('#nav-rooms a[data-room="north"] .badge').count(), 0);
    await setHidden(alice.page, true);
    await post(nodeB, BOB, 'north', 'unread four');
    await item(alice.page, 'unread four').waitFor(WAIT);
    await setHidden(second.page, true);
    await setHidden(second.page, false);
    await second.page.locator('#nav-rooms a[data-room="north"] .badge', { hasText: '1' }).waitFor(WAIT);
    await setHidden(alice.page, false);
    await second.page.locator('#nav-rooms a[data-room="north"] .badge').waitFor({ state: 'detached', ...WAIT });

    // The picker lists her rooms too.
    const picker = await open(nodeA, `/#token=${ALICE}`);
    opened.push(picker);
    await picker.page.locator('#mine-list a[data-room="north"]').waitFor(WAIT);
    for (const { problems } of opened) assert.deepEqual(problems, []);
  } finally {
    for (const { close } of opened) await close();
  }
});

test('direct messages: opened from the picker, listed with the last message and what is unread, closed to others', async () => {
  const [nodeA, nodeB] = nodes;
  const opened = [];
  try {
    const alice = await open(nodeA, `/#token=${ALICE}`);
    opened.push(alice);
    await alice.page.locator('#no-directs').waitFor(WAIT);
    await alice.page.getByLabel('Message someone (their user id)').fill('alice');
    await alice.page.getByRole('button', { name: 'Open' }).click();
    await alice.page.locator('#dm-error', { hasText: 'Could not open a conversation with alice' }).waitFor(WAIT);
    await alice.page.getByLabel('Message someone (their user id)').fill('bob');
    await alice.page.getByRole('button', { name: 'Open' }).click();
    await alice.page.waitForURL(`${nodeA.url}/r/dm%3Aalice%3Abob`, WAIT);
    assert.equal(await alice.page.locator('#room-title').textContent(), 'bob');
    assert.equal(await alice.page.title(), '@bob · livechat');
    await connected(alice.page);
    await say(alice.page, 'psst, Bob: lunch?');
    await item(alice.page, 'psst, Bob: lunch?').waitFor(WAIT);

    const bob = await open(nodeB, `/#token=${BOB}`);
    opened.push(bob);
    const entry = bob.page.locator('#dm-list a[data-room="dm:alice:bob"]');
    await entry.waitFor(WAIT);
    assert.equal(await entry.textContent(), '@alice psst, Bob: lunch? 1 unread');
    // Listed to its two users only: not among the active rooms, where Alice is.
    assert.equal(await bob.page.locator('#room-list a[data-room^="dm:"]').count(), 0);
    await entry.click();
    await item(bob.page, 'psst, Bob: lunch?').waitFor(WAIT);
    await bob.page.locator('#nav-dms a[data-room="dm:alice:bob"][aria-current="page"]').waitFor(WAIT);
    await say(bob.page, 'Sure, at noon.');
    await item(alice.page, 'Sure, at noon.').waitFor(WAIT);

    const carol = await open(nodeA, `/r/dm:alice:bob#token=${CAROL}`);
    opened.push(carol);
    await carol.page.locator('#access', { hasText: 'You cannot enter this conversation' }).waitFor(WAIT);
    // Chromium reports the one refusal asked for (a conversation with oneself); nothing else.
    const unexpected = alice.problems.filter((p) => !p.includes('status of 400'));
    assert.deepEqual([unexpected, bob.problems], [[], []]);
  } finally {
    for (const { close } of opened) await close();
  }
});

test('from the keyboard: a message\'s actions, the reaction picker, Escape; every button says what it does', async () => {
  const [nodeA] = nodes;
  const { page, problems, close } = await open(nodeA, `/r/keys#token=${ALICE}`);
  try {
    await connected(page);
    await post(nodeA, BOB, 'keys', 'Tab to me');
    await say(page, 'Mine, to edit');
    await item(page, 'Mine, to edit').waitFor(WAIT);
    // From the conversation, Tab reaches the first message's actions, shown while they have
    // the focus.
    await page.locator('#scroller').focus();
    await page.keyboard.press('Tab');
    const reply = item(page, 'Tab to me').getByRole('button', { name: 'Reply to Bob' });
    assert.equal(await reply.evaluate((button) => document.activeElement === button), true);
    assert.equal(await reply.evaluate((button) => getComputedStyle(button.parentElement).opacity), '1');
    await page.keyboard.press('Tab');
    await page.keyboard.press('Enter');
    // The picker opens with the focus on its first emoji; Tab, Enter picks the second.
    const picker = page.locator('#reaction-picker');
    await picker.waitFor(WAIT);
    assert.equal(await page.evaluate(() => document.activeElement.getAttribute('aria-label')), 'React with 👍');
    await page.keyboard.press('Tab');
    await page.keyboard.press('Enter');
    await reactionShown(page, 'Tab to me', '❤️', 1, true);
    const reactButton = item(page, 'Tab to me').getByRole('button', { name: /^React to/ });
    assert.equal(await reactButton.evaluate((button) => document.activeElement === button), true, 'the focus back on React');
    // Escape closes it, and the focus goes back where it was.
    await page.keyboard.press('Enter');
    await picker.waitFor(WAIT);
    await page.keyboard.press('Escape');
    await picker.waitFor({ state: 'hidden', ...WAIT });
    assert.equal(await reactButton.evaluate((button) => document.activeElement === button), true);
    assert.equal(await reactButton.getAttribute('aria-expanded'), 'false');

    // Editing from the keyboard; Escape gives the draft back.
    await page.fill('#message-input', 'a draft');
    await item(page, 'Mine, to edit').getByRole('button', { name: 'Edit your message' }).focus();
    await page.keyboard.press('Enter');
    assert.equal(await page.inputValue('#message-input'), 'Mine, to edit');
    assert.equal(await page.locator('#send-button').textContent(), 'Save');
    await page.keyboard.press('Escape');
    assert.equal(await page.inputValue('#message-input'), 'a draft');
    assert.equal(await page.locator('#send-button').textContent(), 'Send');

    // Every button in the timeline has a name for assistive technology.
    const unnamed = await page.locator('#log button, #reaction-picker button').evaluateAll((buttons) => buttons
      .filter((button) => !(button.getAttribute('aria-label') || button.textContent).trim()).map((button) => button.outerHTML));
    assert.deepEqual(unnamed, []);
    assert.deepEqual(problems, []);
  } finally {
    await close();
  }
});
