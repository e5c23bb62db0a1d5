// The chat page in real headless Chromium (Debian's /usr/bin/chromium) against the real server.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { copyFileSync, mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const binary = process.env.LIVECHAT_BIN ?? join(root, 'target', 'debug', 'livechat');
const artifacts = join(root, 'test-artifacts');
const WAIT = { timeout: 15_000 };

class Server {
  static start({ dataDir = mkdtempSync(join(tmpdir(), 'livechat-web-')), bind = '127.0.0.1:0', args = [] } = {}) {
    const child = spawn(binary, ['--bind', bind, '--data-dir', dataDir, ...args], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    return new Promise((resolve, reject) => {
      const lines = createInterface({ input: child.stderr });
      child.once('exit', (code) => reject(new Error(`livechat exited (${code}) before listening`)));
      lines.on('line', (line) => {
        const match = line.match(/listening on (https?:\/\/\S+)/);
        if (match) resolve(Object.assign(new Server(), { child, dataDir, url: match[1] }));
      });
    });
  }

  get host() {
    return new URL(this.url).host;
  }

  stop() {
    return new Promise((resolve) => {
      this.child.once('exit', resolve);
      this.child.kill('SIGTERM');
    });
  }

  async post(room, message) {
    const response = await fetch(`${this.url}/chat/send/`, {
      method: 'POST',
      body: JSON.stringify({ room, message }),
    });
    assert.equal(response.status, 200);
  }
}

let browser;

before(async () => {
  mkdirSync(artifacts, { recursive: true });
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync',
    ],
  });
});

after(async () => {
  await browser?.close();
});

/** Opens `path` in a fresh context, collecting console errors, page errors, dialogs and any
 * request that leaves the server's origin. */
async function open(server, path, viewport = { width: 1280, height: 800 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  const problems = [];
  const own = (url) => url.startsWith(server.url) || url.startsWith(`ws://${server.host}/`) || url.startsWith('data:');
  page.on('console', (message) => {
    if (message.type() === 'error') problems.push(`console error: ${message.text()}`);
  });
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('dialog', async (dialog) => {
    problems.push(`dialog: ${dialog.message()}`);
    await dialog.dismiss();
  });
  page.on('request', (request) => {
    if (!own(request.url())) problems.push(`request outside the server: ${request.url()}`);
  });
  page.on('websocket', (socket) => {
    if (!own(socket.url())) problems.push(`WebSocket outside the server: ${socket.url()}`);
  });
  await page.goto(server.url + path);
  return { page, problems, close: () => context.close() };
}

async function connected(page) {
  await page.locator('#status[data-state="connected"]').waitFor(WAIT);
}

/** A message the server confirmed (not one still pending). */
function message(page, text) {
  return page.locator('#log li:not(.pending) .text', { hasText: text });
}

async function say(page, text, how = 'enter') {
  await page.fill('#message-input', text);
  if (how === 'enter') await page.press('#message-input', 'Enter');
  else await page.click('#send-button');
}

test('two pages in one room see each other; a page in another room does not', async () => {
  const server = await Server.start();
  const pages = [];
  try {
    const [alice, bob, carol] = [
      await open(server, '/r/together'),
      await open(server, '/r/together'),
      await open(server, '/r/apart'),
    ];
    pages.push(alice, bob, carol);
    for (const { page } of pages) await connected(page);
    await say(alice.page, 'hello from alice', 'enter');
    await say(bob.page, 'hello from bob', 'button');
    for (const { page } of [alice, bob]) {
      await message(page, 'hello from alice').waitFor(WAIT);
      await message(page, 'hello from bob').waitFor(WAIT);
    }
    await carol.page.waitForTimeout(300);
    assert.equal(await carol.page.locator('#log li').count(), 0);
    for (const { problems } of pages) assert.deepEqual(problems, []);
  } finally {
    for (const { close } of pages) await close();
    await server.stop();
  }
});

test('history shows on load, and a hostile message is text that runs nothing', async () => {
  const server = await Server.start();
  const hostile = '<img src=x onerror=alert(1)>';
  await server.post('stories', 'first, from history');
  await server.post('stories', hostile);
  await server.post('stories', { kind: 'json', n: 1 });
  const { page, problems, close } = await open(server, '/r/stories');
  try {
    await message(page, 'first, from history').waitFor(WAIT);
    const shown = message(page, 'onerror');
    await shown.waitFor(WAIT);
    assert.equal(await shown.textContent(), hostile);
    await message(page, '{"kind":"json","n":1}').waitFor(WAIT);
    assert.equal(await page.locator('#log img').count(), 0);
    await page.waitForTimeout(200);
    assert.deepEqual(problems, [], 'no dialog, no error');
  } finally {
    await close();
    await server.stop();
  }
});

test('the page reconnects by itself after a restart and shows what it missed', async () => {
  const first = await Server.start();
  const sameAddress = { dataDir: first.dataDir, bind: first.host };
  const { page, problems, close } = await open(first, '/r/phoenix');
  let second;
  try {
    await connected(page);
    await first.post('phoenix', 'before the restart');
    await message(page, 'before the restart').waitFor(WAIT);

    await first.stop();
    await page.locator('#status[data-state="reconnecting"]').waitFor(WAIT);
    // Written while the server is down: shown at once, pending.
    await say(page, 'typed while away');
    await page.locator('#log li.pending', { hasText: 'typed while away' }).waitFor(WAIT);
    // Let a few retries fail, so the page is surely away when the other message is sent.
    await page.waitForTimeout(1500);
    second = await Server.start(sameAddress);
    await second.post('phoenix', 'sent while the page was away');

    await message(page, 'sent while the page was away').waitFor(WAIT);
    await connected(page);
    // Resumed with since=: the missed message came over the socket; the pending one was sent
    // after the replay and confirmed by its echo, once.
    await page.locator('#log li.pending').waitFor({ state: 'detached', ...WAIT });
    await second.post('phoenix', 'live again');
    await message(page, 'live again').waitFor(WAIT);
    const texts = await page.locator('#log li .text').allTextContents();
    assert.deepEqual(texts, ['before the restart', 'sent while the page was away', 'typed while away', 'live again']);
    const stored = await (await fetch(`${second.url}/chat/history/?room=phoenix`)).json();
    assert.deepEqual(stored.chat_history.map((m) => m.message),
      ['before the restart', 'sent while the page was away', 'typed while away', 'live again']);
    // While the server was down, Chromium reports the refused connections; nothing else.
    const unexpected = problems.filter((p) => !/ERR_CONNECTION_REFUSED|WebSocket connection to/.test(p));
    assert.deepEqual(unexpected, []);
  } finally {
    await close();
    await second?.stop();
  }
});

test('rooms named like API routes work; the picker; screenshots at phone and desktop width', async () => {
  const server = await Server.start();
  const opened = [];
  try {
    for (const room of ['send', 'history', 'rooms']) {
      const view = await open(server, `/r/${room}`);
      opened.push(view);
      await connected(view.page);
      await say(view.page, `hello in ${room}`);
      await message(view.page, `hello in ${room}`).waitFor(WAIT);
      assert.equal(await view.page.locator('#room-title').textContent(), room);
    }

    const picker = await open(server, '/');
    opened.push(picker);
    await picker.page.locator('#room-list a', { hasText: 'history (1)' }).waitFor(WAIT);
    await picker.page.fill('#room-input', 'not a room!');
    await picker.page.press('#room-input', 'Enter');
    await picker.page.locator('#room-hint.invalid').waitFor(WAIT);
    await picker.page.fill('#room-input', 'lobby');
    await picker.page.press('#room-input', 'Enter');
    await picker.page.waitForURL(`${server.url}/r/lobby`, WAIT);
    await connected(picker.page);

    for (const line of [
      'Welcome to livechat! Messages are stored before anyone sees them.',
      'This line is long on purpose, to show that long messages wrap instead of running off the edge of the screen: '.repeat(2),
      '<b>markup</b> shows as text',
    ]) {
      await server.post('lobby', line);
    }
    await message(picker.page, 'markup').waitFor(WAIT);
    await picker.page.screenshot({ path: join(artifacts, 'chat-desktop.png') });
    if (process.env.UPDATE_SCREENSHOT) {
      copyFileSync(join(artifacts, 'chat-desktop.png'), join(root, 'docs', 'chat-page.png'));
    }

    const phone = await open(server, '/r/lobby', { width: 390, height: 844 });
    opened.push(phone);
    await message(phone.page, 'markup').waitFor(WAIT);
    const overflow = await phone.page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `no horizontal scrolling at phone width (${overflow}px)`);
    await phone.page.screenshot({ path: join(artifacts, 'chat-phone.png') });

    for (const { problems } of opened) assert.deepEqual(problems, []);
  } finally {
    for (const { close } of opened) await close();
    await server.stop();
  }
});

const SECRET = 'web-test-secret';

/** A token from the real binary's `token` subcommand. */
function token(sub, name, ...extra) {
  return execFileSync(binary, ['token', '--sub', sub, '--name', name, ...extra], {
    env: { ...process.env, LIVECHAT_JWT_SECRET: SECRET },
  }).toString().trim();
}

function author(page, text) {
  return page.locator('#log li', { hasText: text }).locator('.author');
}

test('a page on another origin can neither connect nor post; the server\'s own page can', async () => {
  const server = await Server.start();
  const foreign = createServer((request, response) => {
    response.setHeader('Content-Type', 'text/html');
    response.end(`<!doctype html><title>elsewhere</title><script>
      window.results = {};
      const socket = new WebSocket('ws://${server.host}/ws/chat/lobby/');
      socket.onopen = () => { window.results.ws = 'open'; };
      socket.onclose = () => { window.results.ws = window.results.ws ?? 'refused'; };
      fetch('${server.url}/chat/send/', { method: 'POST', body: JSON.stringify({ message: 'csrf' }) })
        .then((r) => { window.results.post = String(r.status); })
        .catch(() => { window.results.post = 'refused'; });
    </script>`);
  });
  await new Promise((resolve) => foreign.listen(0, '127.0.0.1', resolve));
  const context = await browser.newContext();
  const own = await open(server, '/r/lobby');
  try {
    const page = await context.newPage();
    await page.goto(`http://127.0.0.1:${foreign.address().port}/`);
    await page.waitForFunction(() => window.results.ws && window.results.post, null, WAIT);
    const results = await page.evaluate(() => window.results);
    assert.equal(results.ws, 'refused');
    assert.ok(['refused', '403'].includes(results.post), results.post);
    await connected(own.page);
    await say(own.page, 'from the page itself');
    await message(own.page, 'from the page itself').waitFor(WAIT);
    const history = await (await fetch(`${server.url}/chat/history/?room=lobby`)).json();
    assert.deepEqual(history.chat_history.map((m) => m.message), ['from the page itself']);
  } finally {
    await own.close();
    await context.close();
    foreign.close();
    await server.stop();
  }
});

test('with auth required, a sign-in link shows who is speaking; a bad or missing one is refused', async () => {
  const server = await Server.start({ args: ['--auth', 'required', '--jwt-secret', SECRET] });
  const opened = [];
  try {
    const alice = await open(server, `/r/lobby#token=${token('alice', 'Alice')}`);
    const bob = await open(server, `/r/lobby#token=${token('bob', 'Bob')}`);
    opened.push(alice, bob);
    await connected(alice.page);
    await connected(bob.page);
    assert.ok(!alice.page.url().includes('token'), 'the token left the address bar');
    await say(alice.page, 'hello, I am Alice');
    await author(bob.page, 'hello, I am Alice').waitFor(WAIT);
    assert.equal(await author(bob.page, 'hello, I am Alice').textContent(), 'Alice');
    await alice.page.locator('#log li.mine', { hasText: 'hello, I am Alice' }).waitFor(WAIT);
    assert.equal(await bob.page.locator('#log li.mine').count(), 0);
    assert.equal(await alice.page.locator('#name-form').isHidden(), true);
    for (const { problems } of opened) assert.deepEqual(problems, []);

    const elsewhere = await open(server, `/r/lobby#token=${token('carol', 'Carol', '--rooms', 'dev')}`);
    const nobody = await open(server, '/r/lobby');
    opened.push(elsewhere, nobody);
    await elsewhere.page.locator('#access', { hasText: 'does not give access' }).waitFor(WAIT);
    await nobody.page.locator('#access', { hasText: 'needs a sign-in link' }).waitFor(WAIT);
    await nobody.page.screenshot({ path: join(artifacts, 'chat-sign-in-needed.png') });
  } finally {
    for (const { close } of opened) await close();
    await server.stop();
  }
});

test('with auth off, a chosen name is shown, marked as chosen', async () => {
  const server = await Server.start();
  const opened = [];
  try {
    const dana = await open(server, '/r/names');
    const erin = await open(server, '/r/names');
    opened.push(dana, erin);
    await connected(dana.page);
    await dana.page.fill('#name-input', 'Dana');
    await dana.page.press('#name-input', 'Enter');
    await connected(dana.page);
    await say(dana.page, 'hi from Dana');
    await author(erin.page, 'hi from Dana').waitFor(WAIT);
    assert.equal(await author(erin.page, 'hi from Dana').textContent(), 'Dana (unverified)');
    await dana.page.locator('#log li.mine', { hasText: 'hi from Dana' }).waitFor(WAIT);
    await say(erin.page, 'hi from nobody in particular');
    assert.equal(await author(dana.page, 'hi from nobody').textContent(), 'anonymous');
    // Remembered on the next visit.
    await dana.page.reload();
    assert.equal(await dana.page.inputValue('#name-input'), 'Dana');
    for (const { problems } of opened) assert.deepEqual(problems, []);
  } finally {
    for (const { close } of opened) await close();
    await server.stop();
  }
});

test('served over TLS (https and wss) with its own certificate', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'livechat-tls-'));
  execFileSync(process.env.CERT_TOOL ?? join(root, 'target', 'debug', 'examples', 'test_cert'), [dir]);
  const server = await Server.start({
    args: ['--tls-cert', join(dir, 'cert.pem'), '--tls-key', join(dir, 'key.pem')],
  });
  // The test's certificate is not signed by anyone Chromium knows.
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  try {
    assert.ok(server.url.startsWith('https://'), server.url);
    const page = await context.newPage();
    const sockets = [];
    page.on('websocket', (socket) => sockets.push(socket.url()));
    await page.goto(`${server.url}/r/secure`);
    await connected(page);
    await say(page, 'sent over wss');
    await message(page, 'sent over wss').waitFor(WAIT);
    assert.ok(sockets.length > 0 && sockets.every((url) => url.startsWith('wss://')), sockets.join());
  } finally {
    await context.close();
    await server.stop();
  }
});

test('a message over the server\'s size limit stays in the composer with the reason', async () => {
  const server = await Server.start({ args: ['--max-message-bytes', '1000'] });
  const { page, close } = await open(server, '/r/limits');
  try {
    await connected(page);
    const long = 'x'.repeat(2000);
    await page.locator('#message-input').fill(long);
    await page.locator('#send-button').click();
    await page.locator('#composer-error', { hasText: 'at most 1000' }).waitFor(WAIT);
    assert.equal(await page.locator('#message-input').inputValue(), long);
    assert.equal(await page.locator('#log li').count(), 0);
    const stored = await (await fetch(`${server.url}/chat/history/?room=limits`)).json();
    assert.deepEqual(stored.chat_history, []);
    // A short one goes through, and the reason goes away.
    await say(page, 'short');
    await message(page, 'short').waitFor(WAIT);
    assert.equal(await page.locator('#composer-error').isHidden(), true);
  } finally {
    await close();
    await server.stop();
  }
});

test('killed and restarted while open: every message shown once, the page\'s own confirmed once', async () => {
  const first = await Server.start();
  const sameAddress = { dataDir: first.dataDir, bind: first.host };
  const { page, close } = await open(first, '/r/crash');
  let second;
  try {
    await connected(page);
    for (let n = 1; n <= 5; n += 1) await first.post('crash', `before ${n}`);
    await message(page, 'before 5').waitFor(WAIT);
    first.child.kill('SIGKILL');
    await page.locator('#status[data-state="reconnecting"]').waitFor(WAIT);
    await say(page, 'mine');
    second = await Server.start(sameAddress);
    for (let n = 1; n <= 5; n += 1) await second.post('crash', `after ${n}`);
    await message(page, 'after 5').waitFor(WAIT);
    await page.locator('#log li.pending').waitFor({ state: 'detached', ...WAIT });
    const texts = await page.locator('#log li:not(.event) .text').allTextContents();
    const expected = ['before 1', 'before 2', 'before 3', 'before 4', 'before 5',
      'after 1', 'after 2', 'after 3', 'after 4', 'after 5', 'mine'];
    assert.deepEqual([...texts].sort(), [...expected].sort(), 'each message exactly once');
    assert.equal(texts.filter((t) => t === 'mine').length, 1);
  } finally {
    await close();
    await second?.stop();
  }
});
