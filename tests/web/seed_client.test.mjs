// The replaced service's own kind of frontend: a page served by the app on another port of the
// same host, doing nothing but `new WebSocket('ws://localhost:PORT/ws/chat/ROOM/')` and
// `{"message"}` frames, as the Django Channels tutorial's room page does. livechat must serve it
// with no setting changed (the origin rule of Django Channels' AllowedHostsOriginValidator), and
// refuse the same page served from another host.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { launchChromium } from './chromium.mjs';

const binary = process.env.LIVECHAT_BIN;
const WAIT = { timeout: 15_000 };

/** The tutorial's room page: one socket, a log, a send function. */
function tutorialPage(chatPort, room) {
  return `<!doctype html><meta charset="utf-8"><title>Chat room</title>
<textarea id="chat-log" cols="100" rows="20"></textarea>
<script>
  window.received = [];
  window.state = 'connecting';
  const chatSocket = new WebSocket('ws://localhost:${chatPort}/ws/chat/${room}/');
  chatSocket.onopen = () => { window.state = 'open'; };
  chatSocket.onmessage = (e) => {
    const data = JSON.parse(e.data);
    window.received.push(data);
    document.querySelector('#chat-log').value += data.message + '\\n';
  };
  chatSocket.onclose = (e) => { window.state = 'closed ' + e.code; };
  window.send = (message) => chatSocket.send(JSON.stringify({ message }));
</script>`;
}

/** An HTTP server on `host` serving the tutorial page, as the app would on its own port. */
function servePage(host, html) {
  const server = createServer((request, response) => {
    response.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    response.end(html());
  });
  return new Promise((resolve) => {
    server.listen(0, host, () => resolve(server));
  });
}

let livechat;
let chatPort;
let browser;
const pageServers = [];

before(async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'livechat-seed-client-'));
  livechat = spawn(binary, ['--bind', '127.0.0.1:0', '--data-dir', dataDir], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  chatPort = await new Promise((resolve, reject) => {
    livechat.once('exit', (code) => reject(new Error(`livechat exited (${code}) before listening`)));
    createInterface({ input: livechat.stderr }).on('line', (line) => {
      const match = line.match(/listening on http:\/\/[^:]+:(\d+)/);
      if (match) resolve(Number(match[1]));
    });
  });
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  for (const server of pageServers) server.close();
  livechat?.kill('SIGTERM');
});

async function openPage(url) {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(url);
  return page;
}

async function pageOn(host, room) {
  const server = await servePage(host, () => tutorialPage(chatPort, room));
  pageServers.push(server);
  return `http://${host === '127.0.0.1' ? 'localhost' : host}:${server.address().port}/`;
}

test('the tutorial page on another port of localhost chats with another such page', async () => {
  const url = await pageOn('127.0.0.1', 'tutorial');
  const [alice, bob] = [await openPage(url), await openPage(url)];
  for (const page of [alice, bob]) {
    await page.waitForFunction(() => window.state === 'open', null, WAIT);
  }
  await alice.evaluate(() => window.send('hello from alice'));
  await bob.evaluate(() => window.send({ from: 'bob', n: 2 }));
  for (const page of [alice, bob]) {
    await page.waitForFunction(() => window.received.length === 2, null, WAIT);
    const received = await page.evaluate(() => window.received);
    // The seed's frames: exactly {"message": X}, in the order the server accepted them.
    assert.deepEqual(
      received.map((frame) => Object.keys(frame)),
      [['message'], ['message']],
    );
    assert.deepEqual(
      received.map((frame) => JSON.stringify(frame.message)).sort(),
      [JSON.stringify({ from: 'bob', n: 2 }), JSON.stringify('hello from alice')].sort(),
    );
  }
  assert.deepEqual(await alice.evaluate(() => window.received), await bob.evaluate(() => window.received));
});

test('the same page served from another host (127.0.0.2) is refused', async () => {
  const url = await pageOn('127.0.0.2', 'tutorial');
  const page = await openPage(url);
  await page.waitForFunction(() => window.state.startsWith('closed'), null, WAIT);
  // Refused at the handshake (403): the socket never opened.
  assert.equal(await page.evaluate(() => window.state), 'closed 1006');
  const metrics = await (await fetch(`http://127.0.0.1:${chatPort}/metrics`)).text();
  assert.match(metrics, /livechat_http_requests_total\{route="\/ws\/chat\/\{room\}\/",status="403"\} [1-9]/);
});

test('fetch from the page on another port: a POST with CORS, then history', async () => {
  const url = await pageOn('127.0.0.1', 'cors');
  const page = await openPage(url);
  const answer = await page.evaluate(async (port) => {
    // application/json makes this a non-simple request: the browser sends a preflight first.
    const sent = await fetch(`http://localhost:${port}/chat/send/`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ message: 'posted from the app page', room: 'cors' }),
    });
    const history = await fetch(`http://localhost:${port}/chat/history/?room=cors`);
    return { status: sent.status, sent: await sent.json(), history: await history.json() };
  }, chatPort);
  assert.equal(answer.status, 200);
  assert.equal(answer.sent.message, 'Message sent!');
  assert.deepEqual(
    answer.history.chat_history.map((m) => m.message),
    ['posted from the app page'],
  );
  // The page on 127.0.0.2 cannot read or post.
  const foreign = await openPage(await pageOn('127.0.0.2', 'cors'));
  const refused = await foreign.evaluate(async (port) => {
    try {
      await fetch(`http://localhost:${port}/chat/send/`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ message: 'from elsewhere', room: 'cors' }),
      });
      return 'sent';
    } catch (error) {
      return 'refused';
    }
  }, chatPort);
  assert.equal(refused, 'refused');
  const stored = await (await fetch(`http://127.0.0.1:${chatPort}/chat/history/?room=cors`)).json();
  assert.equal(stored.chat_history.length, 1, 'nothing from the foreign page');
});
