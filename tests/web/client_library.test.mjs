// The JavaScript client library as a browser loads it from the server (GET /livechat.js, an ES
// module), with the browser's own WebSocket and EventSource: a room followed, a message sent
// once, presence; and the same over Server-Sent Events; a handshake refused by a ban, which the
// browser hides, told with its status and reason.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { browser, Server, WAIT } from './harness.mjs';

const KEY = 'client-library-test-key';

let server;
let base;

before(async () => {
  server = await Server.start({ args: ['--api-key', KEY] });
  base = server.url;
});

after(() => server?.stop());

for (const transport of ['websocket', 'sse']) {
  test(`a page imports /livechat.js and chats over ${transport}`, async () => {
    const room = `library_${transport}`;
    const page = await (await browser.newContext()).newPage();
    await page.goto(`${base}/healthz`);
    await page.evaluate(async ({ room, transport }) => {
      const { LivechatClient } = await import('/livechat.js');
      window.told = [];
      const chat = new LivechatClient({ room, name: 'Ada', transport });
      for (const type of ['live', 'message', 'presence', 'sent']) chat.on(type, (detail) => window.told.push([type, detail]));
      window.chat = chat;
      await chat.connect();
    }, { room, transport });
    await page.waitForFunction(() => window.told.some(([type]) => type === 'live'), null, WAIT);
    await fetch(`${base}/chat/send/`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` },
      body: JSON.stringify({ room, message: 'from the server' }),
    });
    await page.evaluate(() => window.chat.send('from the page'));
    await page.waitForFunction(() => window.told.filter(([type]) => type === 'message').length === 2, null, WAIT);
    const told = await page.evaluate(() => ({
      messages: window.told.filter(([type]) => type === 'message').map(([, frame]) => [frame.id, frame.message]),
      sent: window.told.filter(([type]) => type === 'sent').length,
      people: Object.keys(window.chat.presence.users),
      transport: window.chat.transport,
    }));
    assert.deepEqual(told, {
      messages: [[1, 'from the server'], [2, 'from the page']],
      sent: 1,
      people: ['n:Ada'],
      transport,
    });
    await page.close();
  });
}

test('in a browser, which hides a refused handshake, the client still tells a ban from a blocked network', async () => {
  const room = 'library_banned';
  await fetch(`${base}/api/bans`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` },
    body: JSON.stringify({ user: 'Mallory', room, reason: 'spam' }),
  });
  const page = await (await browser.newContext()).newPage();
  await page.goto(`${base}/healthz`);
  const told = await page.evaluate(async ({ room }) => {
    const { LivechatClient } = await import('/livechat.js');
    const chat = new LivechatClient({ room, name: 'Mallory', transport: 'websocket', since: null });
    const seen = [];
    // What the browser itself shows of the handshake: a close, 1006, nothing more.
    const socket = new WebSocket(`${location.origin.replace('http', 'ws')}/ws/chat/${room}/?name=Mallory`);
    const closed = await new Promise((resolve) => socket.addEventListener('close', (event) => resolve(event.code)));
    const stopped = new Promise((resolve) => chat.on('stopped', resolve));
    chat.on('down', (detail) => seen.push(detail));
    await chat.connect();
    const { code, status, reason, body } = await stopped;
    return { closed, stopped: { code, status, reason, body }, downs: seen.length };
  }, { room });
  assert.deepEqual(told, {
    closed: 1006,
    stopped: { code: 403, status: 403, reason: 'banned: spam', body: { error: 'banned', reason: 'spam' } },
    downs: 0,
  });
  await page.close();
});
