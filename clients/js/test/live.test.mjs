// The client against the real server (the debug binary), through a relay that cuts, refuses and
// holds: a restart with no gap and no duplicate, a message resent after a drop stored once,
// presence and typing, a message's life, the Server-Sent Events fallback, a refused handshake.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { LivechatClient } from '../livechat.js';
import { api, EventSource, mintToken, record, startRelay, startServer, waitFor, WebSocket } from './harness.mjs';

const running = [];
after(async () => {
  for (const thing of running.reverse()) await thing();
});

/** A server and a relay in front of it, stopped after the tests. */
async function setUp() {
  const server = await startServer();
  const relay = await startRelay(server.port);
  running.push(() => relay.close(), () => server.stop());
  return { server, relay };
}

function client(url, room, options = {}) {
  const made = new LivechatClient({
    url,
    room,
    WebSocket,
    EventSource,
    backoff: { initialMs: 100, maxMs: 400 },
    ...options,
  });
  running.push(() => made.close());
  return made;
}

/** Ann on a WebSocket in `room`, live: the client and what it tells (messages, lives, sent). */
async function annLive(url, room) {
  const ann = client(url, room, { name: 'Ann', transport: 'websocket' });
  const told = { ann, messages: record(ann, ['message']), lives: record(ann, ['live']), sent: record(ann, ['sent']) };
  await ann.connect();
  await waitFor('the first connection', () => told.lives.length === 1);
  return told;
}

const texts = (events) => events.map(([, frame]) => frame.message);

async function history(url, room) {
  return (await api(url, 'GET', `/chat/history/?room=${room}&limit=1000`)).chat_history;
}

test('across a server restart: every message once, in order, with those sent while it was down', async () => {
  const { server, relay } = await setUp();
  const room = 'restart';
  const { ann, messages, lives, sent } = await annLive(relay.url, room);
  for (const text of ['m1', 'm2', 'm3']) await api(server.url, 'POST', '/chat/send/', { room, message: text });
  await waitFor('three messages', () => messages.length === 3);

  // Down: the relay refuses while the server restarts on the same data; meanwhile the room goes
  // on (m4, m5 published on the new process) and Ann writes.
  relay.refusing = true;
  await server.stop();
  await waitFor('the drop to be seen', () => !ann.live);
  const again = await startServer({ dataDir: server.dataDir });
  running.push(() => again.stop());
  relay.target = again.port;
  for (const text of ['m4', 'm5']) await api(again.url, 'POST', '/chat/send/', { room, message: text });
  const nonce = ann.send('written while down');
  assert.equal(ann.pending, 1);
  relay.refusing = false;
  await waitFor('the resumed connection', () => lives.length === 2);
  await waitFor('the pending message stored', () => sent.length === 1);
  await api(again.url, 'POST', '/chat/send/', { room, message: 'm6' });
  await waitFor('seven messages', () => messages.length === 7);

  assert.deepEqual(texts(messages), ['m1', 'm2', 'm3', 'm4', 'm5', 'written while down', 'm6']);
  assert.deepEqual(messages.map(([, frame]) => frame.id), [1, 2, 3, 4, 5, 6, 7]);
  assert.equal(messages[5][1].nonce, nonce);
  assert.equal(ann.pending, 0);
  const stored = await history(again.url, room);
  assert.deepEqual(stored.map((item) => item.message), texts(messages), 'the server has the same, once each');
});

test('a message whose first send was held up is resent after the drop and stored once', async () => {
  const { server, relay } = await setUp();
  const room = 'once';
  const { ann, messages, lives, sent } = await annLive(relay.url, room);

  // The frame leaves the client but is held on the way; the connection drops; the client
  // reconnects, finds it not stored (not in the replay) and sends it again with its nonce.
  relay.holdUp();
  const nonce = ann.send('exactly once');
  relay.cutClients();
  await waitFor('the resumed connection', () => lives.length === 2);
  await waitFor('the resend stored', () => sent.length === 1);
  // Now the first send arrives at the server, late, on the old connection: the same nonce, so
  // the server answers it with the stored message again instead of storing it twice.
  relay.releaseUp();
  const storedId = sent[0][1].id;
  await waitFor('the late copy answered', () => relay.late.some((bytes) => bytes.includes(`"id":${storedId},`) && bytes.includes(nonce)));
  await api(server.url, 'POST', '/chat/send/', { room, message: 'after it' });
  await waitFor('the next message', () => messages.length === 2);

  const stored = await history(server.url, room);
  assert.deepEqual(stored.map((item) => [item.message, item.nonce]), [['exactly once', nonce], ['after it', undefined]]);
  assert.deepEqual(texts(messages), ['exactly once', 'after it']);

  // And when the echo is lost instead (stored, the answer cut off): the replay confirms it, and
  // nothing is sent twice.
  relay.hold();
  const second = ann.send('echo lost');
  await waitFor('it stored', async () => (await history(server.url, room)).some((item) => item.nonce === second));
  relay.held.length = 0;
  relay.holding = false;
  relay.cut();
  await waitFor('the next resumed connection', () => lives.length === 3);
  await waitFor('its copy received', () => messages.length === 3);
  assert.deepEqual(texts(messages), ['exactly once', 'after it', 'echo lost']);
  assert.equal((await history(server.url, room)).length, 3);
  assert.equal(ann.pending, 0);
});

test('gap and reset are told, and the room goes on after them without a duplicate', async () => {
  const server = await startServer({ args: ['--replay-max', '2'] });
  running.push(() => server.stop());
  const room = 'numbering';
  for (const text of ['m1', 'm2', 'm3', 'm4', 'm5']) await api(server.url, 'POST', '/chat/send/', { room, message: text });
  const { epoch } = await api(server.url, 'GET', `/chat/history/?room=${room}&limit=1`);

  // Behind by five with a replay of two: ids 1-3 are a gap, 4 and 5 come.
  const behind = client(server.url, room, { since: 0, epoch });
  const told = record(behind, ['gap', 'message', 'live']);
  await behind.connect();
  await waitFor('caught up', () => behind.live);
  assert.deepEqual(told.map(([type, detail]) => [type, detail.from ?? detail.message ?? detail.id]),
    [['gap', 1], ['message', 'm4'], ['message', 'm5'], ['live', 5]]);
  assert.equal(told[0][1].to, 3);

  // Another epoch (the room's numbering started again elsewhere): reset, then what follows.
  const stale = client(server.url, room, { since: 2, epoch: 'an-epoch-gone' });
  const resets = record(stale, ['reset', 'message']);
  await stale.connect();
  await waitFor('caught up', () => stale.live);
  await api(server.url, 'POST', '/chat/send/', { room, message: 'm6' });
  await waitFor('m6', () => resets.length === 2);
  assert.deepEqual(resets.map(([type, detail]) => [type, detail.last ?? detail.message]), [['reset', 5], ['message', 'm6']]);
  assert.equal(stale.epoch, epoch);
});

test('a caller holding the history resumes after it (resumeAfter); a new name reconnects under it (rename)', async () => {
  const server = await startServer();
  running.push(() => server.stop());
  const room = 'own-history';
  for (const text of ['h1', 'h2']) await api(server.url, 'POST', '/chat/send/', { room, message: text });
  const { chat_history: page, epoch } = await api(server.url, 'GET', `/chat/history/?room=${room}&limit=10`);
  const ann = client(server.url, room, { name: 'Ann', since: null, transport: 'websocket' });
  const told = record(ann, ['message', 'connecting', 'live']);
  ann.resumeAfter(page.at(-1).id, epoch);
  await api(server.url, 'POST', '/chat/send/', { room, message: 'h3' });
  await ann.connect();
  await waitFor('caught up', () => ann.live);
  // What was read already is not told again; what came after it is.
  assert.deepEqual(told.filter(([type]) => type === 'message').map(([, frame]) => frame.message), ['h3']);

  ann.rename('Bo');
  await waitFor('connected again', () => told.filter(([type]) => type === 'live').length === 2);
  ann.send('under the new name');
  await waitFor('the echo', () => told.some(([type, frame]) => type === 'message' && frame.message === 'under the new name'));
  const stored = (await history(server.url, room)).at(-1);
  assert.equal(stored.user.name, 'Bo');
  assert.equal(told.filter(([type]) => type === 'message').length, 2, 'nothing twice across the reconnect');
});

test('messages over the rate limit wait and go again by themselves, each stored once', async () => {
  const server = await startServer({ args: ['--rate-limit', '4/s', '--rate-burst', '2'] });
  running.push(() => server.stop());
  const room = 'paced';
  const ann = client(server.url, room, { name: 'Ann' });
  const told = record(ann, ['message', 'ratelimited', 'refused']);
  await ann.connect();
  await waitFor('live', () => ann.live);
  const written = ['one', 'two', 'three', 'four', 'five', 'six'];
  for (const text of written) ann.send(text);
  await waitFor('all six', () => told.filter(([type]) => type === 'message').length === 6);
  assert.ok(told.some(([type]) => type === 'ratelimited'), 'the limit was met');
  assert.deepEqual(told.filter(([type]) => type === 'refused'), []);
  // Once each (a message refused for its rate may be overtaken by one the refilled bucket let in).
  assert.deepEqual(texts(told.filter(([type]) => type === 'message')).sort(), [...written].sort());
  assert.deepEqual((await history(server.url, room)).map((item) => item.message).sort(), [...written].sort());
  assert.equal(ann.pending, 0);
});

test('presence: who is here as a state, joins and leaves as they come; typing', async () => {
  const { relay } = await setUp();
  const room = 'people';
  const ann = client(relay.url, room, { name: 'Ann' });
  const presence = record(ann, ['presence']);
  const typing = record(ann, ['typing']);
  await ann.connect();
  await waitFor('Ann listed', () => 'n:Ann' in ann.presence.users);

  const bob = client(relay.url, room, { name: 'Bob' });
  const bobLive = record(bob, ['live']);
  await bob.connect();
  await waitFor('Bob seen joining', () => presence.some(([, change]) => change.joined.some((user) => user.name === 'Bob')));
  assert.deepEqual(Object.keys(ann.presence.users).sort(), ['n:Ann', 'n:Bob']);
  assert.equal(ann.presence.members, 2);
  await waitFor('Bob live', () => bobLive.length === 1);
  assert.deepEqual(Object.keys(bob.presence.users).sort(), ['n:Ann', 'n:Bob']);

  assert.equal(bob.typing(), true);
  assert.equal(bob.typing(), false, 'at most one every 2.2 s');
  await waitFor('Bob typing', () => typing.length === 1);
  assert.deepEqual(typing[0][1].user, { name: 'Bob' });

  bob.close();
  await waitFor('Bob seen leaving', () => presence.some(([, change]) => change.left.some((user) => user.name === 'Bob')));
  assert.deepEqual(Object.keys(ann.presence.users), ['n:Ann']);
  assert.equal(ann.presence.members, 1);
});

test("a message's life: replies, edits, reactions, read positions and receipts, deletions", async () => {
  const { relay } = await setUp();
  const room = 'life';
  const ann = client(relay.url, room, { name: 'Ann', receipts: true });
  const bob = client(relay.url, room, { name: 'Bob', receipts: true });
  const seenByAnn = record(ann, ['message', 'edited', 'reaction', 'seen', 'deleted']);
  const seenByBob = record(bob, ['message', 'edited', 'deleted', 'read']);
  const live = record(bob, ['live']);
  await ann.connect();
  await bob.connect();
  await waitFor('both live', () => ann.live && live.length === 1);

  ann.send('hello');
  await waitFor('hello', () => seenByBob.length === 1);
  const id = seenByBob[0][1].id;
  bob.send('hi Ann', { replyTo: id });
  ann.edit(id, 'hello, Bob');
  bob.react(id, '👍');
  bob.read(id + 1);
  await waitFor('the edit, the reply, the reaction and the receipt', () => ['edited', 'reaction', 'seen']
    .every((type) => seenByAnn.some(([seen]) => seen === type)));
  const of = (type) => seenByAnn.find(([seen]) => seen === type)[1];
  assert.equal(seenByAnn.filter(([type]) => type === 'message')[1][1].reply_to, id);
  assert.deepEqual([of('edited').id, of('edited').message, of('edited').by], [id, 'hello, Bob', { name: 'Ann' }]);
  assert.deepEqual([of('reaction').emoji, of('reaction').count, of('reaction').on], ['👍', 1, true]);
  assert.deepEqual([of('seen').user, of('seen').id], [{ name: 'Bob' }, id + 1]);
  const bobRefused = record(bob, ['refused']);
  bob.edit(id, 'not mine');
  await waitFor("Bob's edit refused", () => bobRefused.length === 1);
  assert.equal(bobRefused[0][1].kind, 'edit');
  assert.equal(bobRefused[0][1].id, id);

  ann.delete(id);
  await waitFor('the deletion', () => seenByBob.some(([type]) => type === 'deleted'));
  assert.equal(seenByBob.find(([type]) => type === 'deleted')[1].id, id);
});

test('where WebSockets are blocked, the room is followed over Server-Sent Events and sent over HTTP', async () => {
  const { server, relay } = await setUp();
  relay.blockWebSockets = true;
  const room = 'fallback';
  const ann = client(relay.url, room, { name: 'Ann' });
  const attempts = record(ann, ['connecting']);
  const downs = record(ann, ['down']);
  const messages = record(ann, ['message']);
  const lives = record(ann, ['live']);
  const sent = record(ann, ['sent']);
  await ann.connect();
  await waitFor('live over SSE', () => lives.length === 1);
  assert.deepEqual(attempts.map(([, detail]) => detail.transport), ['websocket', 'websocket', 'sse']);
  // Each WebSocket that never opened was probed: the server would have let it in (426), so the
  // refusal came from the way there, and the client went on.
  assert.deepEqual(downs.map(([, detail]) => [detail.transport, detail.status]), [['websocket', 426], ['websocket', 426]]);
  assert.equal(ann.transport, 'sse');
  await waitFor('Ann listed', () => 'n:Ann' in ann.presence.users);

  await api(server.url, 'POST', '/chat/send/', { room, message: 'from the server' });
  const nonce = ann.send('from Ann over HTTP');
  await waitFor('stored', () => sent.length === 1);
  await waitFor('both received', () => messages.length === 2);
  assert.deepEqual(texts(messages), ['from the server', 'from Ann over HTTP']);
  assert.equal(messages[1][1].nonce, nonce);
  assert.equal(messages[1][1].user.name, 'Ann');
  assert.equal(ann.typing(), false, 'no typing over SSE');
  // A message's life over the HTTP routes, under the chosen name, told on the stream.
  const life = record(ann, ['edited', 'reaction', 'refused']);
  const mine = messages[1][1].id;
  assert.equal(ann.edit(mine, 'edited over HTTP'), true);
  ann.react(mine, '🎉');
  ann.edit(messages[0][1].id, 'not mine');
  await waitFor('the edit, the reaction and the refusal', () => life.length === 3);
  const of = (type) => life.find(([seen]) => seen === type)[1];
  assert.deepEqual([of('edited').id, of('edited').message, of('edited').by], [mine, 'edited over HTTP', { name: 'Ann' }]);
  assert.deepEqual([of('reaction').emoji, of('reaction').user], ['🎉', { name: 'Ann' }]);
  assert.deepEqual([of('refused').kind, of('refused').id, of('refused').frame.retry], ['edit', messages[0][1].id, undefined]);

  // The stream drops; the room goes on; Ann writes while it is down (kept pending): the stream
  // resumes from the last id, the message is sent once it is live again.
  relay.refusing = true;
  relay.cut();
  await waitFor('the drop seen', () => !ann.live);
  await api(server.url, 'POST', '/chat/send/', { room, message: 'while away' });
  ann.send('written while away');
  relay.refusing = false;
  await waitFor('all four', () => messages.length === 4);
  await waitFor('stored', () => sent.length === 2);
  assert.deepEqual(texts(messages).slice(2).sort(), ['while away', 'written while away']);
  assert.deepEqual(messages.map(([, frame]) => frame.id), [1, 2, 3, 4]);
  assert.ok(attempts.slice(3).every(([, detail]) => detail.transport === 'sse'), 'it stays on SSE once it worked');
  assert.equal((await history(server.url, room)).length, 4);
});

test('with auth required: a token is the identity, one the server refuses stops the client', async () => {
  const secret = 'livechat-client-test-secret-of-32-bytes-or-more';
  const server = await startServer({ args: ['--auth', 'required', '--jwt-secret', secret] });
  running.push(() => server.stop());
  const stops = [];
  for (const token of [undefined, mintToken(secret, ['--sub', 'eve', '--rooms', 'elsewhere'])]) {
    const refused = client(server.url, 'members', { token });
    refused.on('stopped', (detail) => stops.push(detail.code));
    await refused.connect();
  }
  assert.deepEqual(stops, [401, 403]);

  const ada = client(server.url, 'members', { token: mintToken(secret, ['--sub', 'ada', '--name', 'Ada', '--ttl', '10m']) });
  const told = record(ada, ['live', 'message', 'token']);
  await ada.connect();
  await waitFor('live', () => told.length === 1);
  ada.send('signed');
  ada.refreshToken(mintToken(secret, ['--sub', 'ada', '--name', 'Ada', '--ttl', '1h']));
  await waitFor('the message and the fresh token', () => told.length === 3);
  const message = told.find(([type]) => type === 'message')[1];
  assert.deepEqual(message.user, { id: 'ada', name: 'Ada' });
  assert.ok(told.find(([type]) => type === 'token')[1].exp > Date.now() / 1000 + 3000);
});

test('a handshake the server refuses is told with its status and reason, and stops the client', async () => {
  const { server, relay } = await setUp();
  await api(server.url, 'POST', '/api/bans', { user: 'Mallory', room: 'guarded', reason: 'spam' });
  const mallory = client(relay.url, 'guarded', { name: 'Mallory', transport: 'websocket', since: null });
  const told = record(mallory, ['connecting', 'down', 'stopped']);
  await mallory.connect();
  await waitFor('stopped', () => told.some(([type]) => type === 'stopped'));
  const [, stopped] = told.find(([type]) => type === 'stopped');
  assert.deepEqual(
    [stopped.code, stopped.status, stopped.reason, stopped.body],
    [403, 403, 'banned: spam', { error: 'banned', reason: 'spam' }],
  );
  assert.deepEqual(told.map(([type]) => type), ['connecting', 'stopped'], 'no down, no second attempt');

  // A network that answers nothing at all: told as a drop (`status` null), and tried again.
  relay.refusing = true;
  relay.cut(); // the probe's kept-alive connection too
  const ann = client(relay.url, 'guarded', { name: 'Ann', transport: 'websocket', since: null });
  const downs = record(ann, ['down']);
  await ann.connect();
  await waitFor('two drops', () => downs.length >= 2);
  assert.deepEqual(downs.slice(0, 2).map(([, detail]) => detail.status), [null, null]);
  relay.refusing = false;
  const lives = record(ann, ['live']);
  await waitFor('live once the network is back', () => lives.length === 1);
});

test('the server serves this very file at /livechat.js', async () => {
  const { server } = await setUp();
  const answer = await fetch(`${server.url}/livechat.js`);
  assert.equal(answer.status, 200);
  assert.match(answer.headers.get('content-type'), /^text\/javascript/);
  const served = await answer.text();
  assert.ok(served === readFileSync(new URL('../livechat.js', import.meta.url), 'utf8'),
    'the file served is not clients/js/livechat.js as it is now: build the server again');
});
