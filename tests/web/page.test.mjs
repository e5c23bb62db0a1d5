// The chat page in real headless Chromium (Debian's /usr/bin/chromium) against the real server.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { copyFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import {
  artifacts, author, browser, connected, message, nameAs, open, people, postMany, root, say, SECRET, Server,
  setHidden, shown, showsExactlyWhatIsStored, token, until, WAIT,
} from './harness.mjs';

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
    // Carol's own message comes back to her, and nothing from the other room came before it.
    await say(carol.page, 'only in apart');
    await message(carol.page, 'only in apart').waitFor(WAIT);
    assert.deepEqual(await shown(carol.page), ['only in apart']);
    for (const { problems } of pages) assert.deepEqual(problems, []);
  } finally {
    for (const { close } of pages) await close();
    await server.stop();
  }
});

test('Chromium agrees to permessage-deflate: long messages both ways travel compressed and read the same', async () => {
  const server = await Server.start();
  const pages = [];
  const compressions = async () => {
    const scrape = await (await fetch(`${server.url}/metrics`)).text();
    return Number(scrape.match(/^livechat_frames_compressed_total (\d+)/m)?.[1] ?? 0);
  };
  try {
    const answers = [];
    // The handshake's answer, as Chromium's network layer saw it.
    const watchHandshakes = async (page) => {
      const cdp = await page.context().newCDPSession(page);
      await cdp.send('Network.enable');
      cdp.on('Network.webSocketHandshakeResponseReceived', ({ response }) => answers.push(response.headers));
    };
    const [alice, bob] = [
      await open(server, '/r/squeezed', { setup: watchHandshakes }),
      await open(server, '/r/squeezed', { setup: watchHandshakes }),
    ];
    pages.push(alice, bob);
    for (const { page } of pages) await connected(page);
    assert.equal(answers.length, 2);
    for (const headers of answers) {
      const agreed = Object.entries(headers).find(([name]) => name.toLowerCase() === 'sec-websocket-extensions')?.[1];
      assert.match(agreed ?? '', /^permessage-deflate; server_no_context_takeover; client_no_context_takeover/);
    }
    const before = await compressions();
    // Chromium compresses what it sends; the server inflates it, and compresses the room's frame
    // once for both pages.
    const long = 'a long chat message that compresses well, '.repeat(10).trim();
    await say(alice.page, long);
    for (const { page } of pages) await message(page, long).waitFor(WAIT);
    await until(async () => (await compressions()) === before + 1, 'one compression for two pages');
    await server.post('squeezed', 'short: sent plain');
    for (const { page } of pages) await message(page, 'short: sent plain').waitFor(WAIT);
    assert.deepEqual(await server.stored('squeezed'), [long, 'short: sent plain']);
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
    assert.deepEqual(problems, [], 'no dialog, no error');
  } finally {
    await close();
    await server.stop();
  }
});

test('restarted while open: what others sent meanwhile is shown once, in order; the page\'s own once', async () => {
  const first = await Server.start();
  const sameAddress = { dataDir: first.dataDir, bind: first.host };
  let attempts = 0;
  const { page, problems, close } = await open(first, '/r/phoenix', {
    setup: (p) => p.on('websocket', () => { attempts += 1; }),
  });
  let second;
  try {
    await connected(page);
    await first.post('phoenix', 'before the restart');
    await message(page, 'before the restart').waitFor(WAIT);

    await first.stop();
    await page.locator('#status[data-state="reconnecting"]').waitFor(WAIT);
    // Written while the server is down: shown at once, pending.
    await say(page, 'typed while away');
    const pending = page.locator('#log li.pending', { hasText: 'typed while away' });
    await pending.waitFor(WAIT);
    assert.equal(await pending.locator('.author').textContent(), 'sending…');
    assert.equal(await page.inputValue('#message-input'), '', 'the composer is free for the next one');
    // A few reconnection attempts fail, so the page is surely away when the others write.
    const failed = attempts;
    await until(() => attempts >= failed + 2, 'two more connection attempts');
    second = await Server.start(sameAddress);
    // Another client writes while the page finds its way back (and goes on once it has).
    for (let n = 1; n <= 5; n += 1) await second.post('phoenix', `sent while the page was away ${n}`);
    await message(page, 'sent while the page was away 5').waitFor(WAIT);
    await connected(page);
    for (let n = 1; n <= 5; n += 1) await second.post('phoenix', `live again ${n}`);
    await message(page, 'live again 5').waitFor(WAIT);

    // Resumed with since=: the missed messages came over the socket, each once, in the order
    // they were stored; the pending one was sent once connected and confirmed by its echo.
    await page.locator('#log li.pending').waitFor({ state: 'detached', ...WAIT });
    await showsExactlyWhatIsStored(page, second, 'phoenix');
    const texts = await shown(page);
    assert.equal(texts.length, 12);
    assert.equal(texts[0], 'before the restart');
    assert.equal(texts.filter((t) => t === 'typed while away').length, 1);
    assert.equal(await page.locator('#log li', { hasText: 'typed while away' }).count(), 1, 'one element');
    assert.equal(await page.locator('#log li.event').count(), 0, 'no gap, no reset');
    // While the server was down, Chromium reports the refused connections; nothing else.
    const unexpected = problems.filter((p) => !/ERR_CONNECTION_REFUSED|WebSocket connection to/.test(p));
    assert.deepEqual(unexpected, []);
  } finally {
    await close();
    await first.stop();
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

    const phone = await open(server, '/r/lobby', { viewport: { width: 390, height: 844 } });
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


test('a page on another host can neither connect nor post; the server\'s own page can', async () => {
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
  // 127.0.0.2: another host (a page on the server's own host, at any port, would be served).
  await new Promise((resolve) => foreign.listen(0, '127.0.0.2', resolve));
  const context = await browser.newContext();
  const own = await open(server, '/r/lobby');
  try {
    const page = await context.newPage();
    await page.goto(`http://127.0.0.2:${foreign.address().port}/`);
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

test('a session that expires stops the page and forgets who was here', async () => {
  const server = await Server.start({ args: ['--auth', 'required', '--jwt-secret', SECRET] });
  const opened = [];
  try {
    const alice = await open(server, `/r/expiring#token=${token('alice', 'Alice', '--ttl', '2s')}`);
    const bob = await open(server, `/r/expiring#token=${token('bob', 'Bob')}`);
    opened.push(alice, bob);
    await connected(alice.page);
    await alice.page.locator('#people-list li', { hasText: 'Bob' }).waitFor(WAIT);
    // Its token's exp, plus the 5 s of clock skew: then the server closes with 4001.
    await alice.page.locator('#access', { hasText: 'session has expired' }).waitFor({ timeout: 20_000 });
    assert.equal(await alice.page.locator('#status').textContent(), 'Not connected');
    assert.equal(await alice.page.locator('#people-list li').count(), 0);
    assert.match(await alice.page.locator('#people-count').textContent(), /Not connected/);
    for (const { problems } of opened) assert.deepEqual(problems, []);
  } finally {
    for (const { close } of opened) await close();
    await server.stop();
  }
});

test('links in messages can be followed, safely; other schemes stay text', async () => {
  const server = await Server.start();
  const { page, problems, close } = await open(server, '/r/links');
  try {
    await connected(page);
    await say(page, 'read https://example.com/a?b=1&c=2. then javascript:alert(1) or (http://example.org/x)');
    await message(page, 'read https://').waitFor(WAIT);
    const links = await page.locator('#log .text a').evaluateAll((nodes) => nodes.map((a) => ({
      href: a.getAttribute('href'), text: a.textContent, rel: a.rel, target: a.target,
    })));
    assert.deepEqual(links, [
      { href: 'https://example.com/a?b=1&c=2', text: 'https://example.com/a?b=1&c=2', rel: 'noopener noreferrer', target: '_blank' },
      { href: 'http://example.org/x', text: 'http://example.org/x', rel: 'noopener noreferrer', target: '_blank' },
    ]);
    // The whole text is still there, as characters.
    assert.equal(await message(page, 'read https://').textContent(),
      'read https://example.com/a?b=1&c=2. then javascript:alert(1) or (http://example.org/x)');
    assert.deepEqual(problems, []);
  } finally {
    await close();
    await server.stop();
  }
});

test('history kept to the server key: the page says so and follows the room live', async () => {
  const server = await Server.start({ args: ['--history-reads', 'api-key', '--api-key', 'page-test-key'] });
  await server.post('private', 'said before the page came');
  const { page, problems, close } = await open(server, '/r/private');
  try {
    await page.locator('#log li.event', { hasText: 'Earlier messages are not shown' }).waitFor(WAIT);
    await connected(page);
    await say(page, 'said live');
    await message(page, 'said live').waitFor(WAIT);
    assert.equal(await message(page, 'said before').count(), 0);
    assert.deepEqual(problems, []);
  } finally {
    await close();
    await server.stop();
  }
});

test('with auth off, a chosen name is shown as chosen, said once for the room, not on every message', async () => {
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
    assert.equal(await author(erin.page, 'hi from Dana').textContent(), 'Dana');
    assert.equal(await author(erin.page, 'hi from Dana').getAttribute('class'), 'author chosen');
    await erin.page.locator('#names-note', { hasText: 'not verified' }).waitFor(WAIT);
    assert.equal(await erin.page.locator('#log', { hasText: 'unverified' }).count(), 0);
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

test('a message over the server\'s size limit stays in the composer with the reason; nothing is sent', async () => {
  const server = await Server.start({ args: ['--max-message-bytes', '1000'] });
  const sent = [];
  const { page, problems, close } = await open(server, '/r/limits', {
    setup: (p) => p.on('websocket', (socket) => socket.on('framesent', ({ payload }) => sent.push(payload))),
  });
  try {
    // The server tells the page its limit in the HTML.
    assert.equal(await page.locator('meta[name="livechat-max-message-bytes"]').getAttribute('content'), '1000');
    await connected(page);
    const long = 'x'.repeat(2000);
    await page.locator('#message-input').fill(long);
    await page.locator('#send-button').click();
    const reason = page.locator('#composer-error[role="alert"]', { hasText: 'at most 1000' });
    await reason.waitFor(WAIT);
    assert.ok(await reason.isVisible());
    assert.equal(await page.locator('#message-input').inputValue(), long);
    assert.equal(await page.locator('#log li').count(), 0);
    // The limit counts the frame's bytes in UTF-8, not characters: 500 × "é" is 1000 bytes,
    // over the limit with the JSON around it and the nonce.
    await page.locator('#message-input').fill('é'.repeat(500));
    await page.locator('#send-button').click();
    await page.locator('#composer-error', { hasText: /1\d\d\d bytes/ }).waitFor(WAIT);
    assert.deepEqual(sent, [], 'nothing was sent');
    assert.deepEqual(await server.stored('limits'), []);
    // A short one goes through, and the reason goes away.
    await say(page, 'short');
    await message(page, 'short').waitFor(WAIT);
    assert.equal(await page.locator('#composer-error').isHidden(), true);
    assert.equal(sent.length, 1);
    assert.deepEqual(problems, []);
  } finally {
    await close();
    await server.stop();
  }
});

test('a message the server still refuses as too large (close 1009) goes back into the composer', async () => {
  const server = await Server.start({ args: ['--max-message-bytes', '1000'] });
  // The page believes the default limit (1 MiB): as if the HTML did not say the server's.
  const { page, close } = await open(server, '/r/toolarge', {
    // (Removed as it is parsed: a document fulfilled by a route would be a "public" page to
    // Chromium, whose local network checks then block its WebSocket to 127.0.0.1.)
    setup: (p) => p.addInitScript(() => {
      new MutationObserver((changes, observer) => {
        const meta = document.querySelector('meta[name="livechat-max-message-bytes"]');
        if (meta) {
          meta.remove();
          observer.disconnect();
        }
      }).observe(document, { childList: true, subtree: true });
    }),
  });
  try {
    await connected(page);
    assert.equal(await page.locator('meta[name="livechat-max-message-bytes"]').count(), 0);
    await say(page, 'first, small');
    await message(page, 'first, small').waitFor(WAIT);
    const long = 'y'.repeat(2000);
    await page.fill('#message-input', 'typed since');
    await page.evaluate((text) => {
      // Sent as a draft typed before: the composer holds something else by the time it fails.
      const input = document.getElementById('message-input');
      const draft = input.value;
      input.value = text;
      document.getElementById('send-form').requestSubmit();
      input.value = draft;
    }, long);
    await page.locator('#composer-error', { hasText: 'size limit' }).waitFor(WAIT);
    await page.screenshot({ path: join(artifacts, 'chat-too-large.png') });
    // Back in the composer, before what was typed since; not in the timeline.
    assert.equal(await page.inputValue('#message-input'), `${long}\ntyped since`);
    assert.equal(await page.locator('#log li.pending').count(), 0);
    // The page reconnected by itself, and the server stored nothing of it.
    await connected(page);
    await page.fill('#message-input', '');
    await say(page, 'after the refusal');
    await message(page, 'after the refusal').waitFor(WAIT);
    assert.deepEqual(await server.stored('toolarge'), ['first, small', 'after the refusal']);
    await showsExactlyWhatIsStored(page, server, 'toolarge');
  } finally {
    await close();
    await server.stop();
  }
});

test('killed (kill -9) and restarted while open: every message shown once, in order; the page\'s own once', async () => {
  const first = await Server.start();
  const sameAddress = { dataDir: first.dataDir, bind: first.host };
  const { page, close } = await open(first, '/r/crash');
  let second;
  try {
    await connected(page);
    for (let n = 1; n <= 5; n += 1) await first.post('crash', `before ${n}`);
    await message(page, 'before 5').waitFor(WAIT);
    await first.stop('SIGKILL');
    await page.locator('#status[data-state="reconnecting"]').waitFor(WAIT);
    await say(page, 'mine');
    await page.locator('#log li.pending', { hasText: 'mine' }).waitFor(WAIT);
    second = await Server.start(sameAddress);
    for (let n = 1; n <= 5; n += 1) await second.post('crash', `after ${n}`);
    await message(page, 'after 5').waitFor(WAIT);
    await message(page, 'mine').waitFor(WAIT);
    await page.locator('#log li.pending').waitFor({ state: 'detached', ...WAIT });
    await showsExactlyWhatIsStored(page, second, 'crash');
    const texts = await shown(page);
    const expected = ['before 1', 'before 2', 'before 3', 'before 4', 'before 5',
      'after 1', 'after 2', 'after 3', 'after 4', 'after 5', 'mine'];
    assert.deepEqual([...texts].sort(), [...expected].sort(), 'each message exactly once');
    assert.deepEqual(texts.slice(0, 5), expected.slice(0, 5));
    assert.equal((await second.stored('crash')).filter((t) => t === 'mine').length, 1, 'stored once');
    assert.equal(await page.locator('#log li', { hasText: 'mine' }).count(), 1, 'one element');
  } finally {
    await close();
    await second?.stop();
  }
});

test('an echo lost, or a publish lost on the way: each message stored once and shown once', async () => {
  const server = await Server.start();
  const fromPage = [];
  let connections = 0;
  const { page, problems, close } = await open(server, '/r/flaky', {
    setup: async (p) => {
      // Outside a secure context there is no crypto.randomUUID: the page makes its own UUIDs.
      await p.addInitScript(() => { delete Crypto.prototype.randomUUID; });
      let dropEcho = true;
      let dropPublish = true;
      await p.routeWebSocket(/\/ws\/chat\//, (ws) => {
        connections += 1;
        const n = connections;
        const upstream = ws.connectToServer();
        ws.onMessage((frame) => {
          fromPage.push({ n, frame: JSON.parse(frame) });
          const { message } = JSON.parse(frame);
          if (message === 'lost on the way' && dropPublish) {
            // Never reaches the server, and the connection drops.
            dropPublish = false;
            ws.close({ code: 1011, reason: 'test: lost' });
            return;
          }
          upstream.send(frame);
          // Sent twice on the wire: the server stores it once and echoes the first again.
          if (message === 'sent twice') upstream.send(frame);
        });
        upstream.onMessage((frame) => {
          // The echo of this one is lost, and the connection with it.
          if (dropEcho && String(frame).includes('"echo lost"')) {
            dropEcho = false;
            ws.close({ code: 1011, reason: 'test: echo lost' });
            return;
          }
          ws.send(frame);
        });
      });
    },
  });
  try {
    await connected(page);
    await say(page, 'sent twice');
    await message(page, 'sent twice').waitFor(WAIT);
    await until(async () => (await server.stored('flaky')).length === 1 && fromPage.length >= 1, 'stored');
    await say(page, 'echo lost');
    // The page reconnects; the replay brings the stored one, which confirms the pending copy.
    await message(page, 'echo lost').waitFor(WAIT);
    await connected(page);
    await say(page, 'lost on the way');
    await message(page, 'lost on the way').waitFor(WAIT);
    await page.locator('#log li.pending').waitFor({ state: 'detached', ...WAIT });
    await showsExactlyWhatIsStored(page, server, 'flaky');
    assert.deepEqual(await server.stored('flaky'), ['sent twice', 'echo lost', 'lost on the way']);

    // The one lost on the way was sent again after the reconnect, with the same nonce.
    const lost = fromPage.filter(({ frame }) => frame.message === 'lost on the way');
    assert.ok(lost.length >= 2, JSON.stringify(lost));
    assert.equal(new Set(lost.map(({ frame }) => frame.nonce)).size, 1);
    assert.ok(new Set(lost.map(({ n }) => n)).size >= 2);
    for (const { frame } of fromPage) {
      assert.match(frame.nonce, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    }
    assert.ok(connections >= 3);
    assert.deepEqual(problems, []);
  } finally {
    await close();
    await server.stop();
  }
});

test('over the rate limit: the page says so, waits, and sends again until each is stored once', async () => {
  // One message per 2 s: three typed in a row go over it however slowly a loaded machine types.
  const server = await Server.start({ args: ['--rate-limit', '30/m', '--rate-burst', '1'] });
  const { page, problems, close } = await open(server, '/r/slow');
  try {
    await connected(page);
    for (const text of ['one', 'two', 'three']) await say(page, text);
    await page.locator('#notice', { hasText: 'too fast' }).waitFor(WAIT);
    for (const text of ['one', 'two', 'three']) await message(page, text).waitFor(WAIT);
    await page.locator('#log li.pending').waitFor({ state: 'detached', ...WAIT });
    // Once they went through, "too fast" is gone (not left up for its full time).
    await page.locator('#notice').waitFor({ state: 'hidden', timeout: 1000 });
    assert.deepEqual([...await server.stored('slow')].sort(), ['one', 'three', 'two']);
    await showsExactlyWhatIsStored(page, server, 'slow');
    assert.equal(await page.inputValue('#message-input'), '');
    assert.deepEqual(problems, []);
  } finally {
    await close();
    await server.stop();
  }
});

test('messages past retention while away: the page says which are gone, shows the rest once', async () => {
  const server = await Server.start({ args: ['--history-max-count', '3'] });
  let away = false;
  let current = null;
  const { page, problems, close } = await open(server, '/r/gaps', {
    setup: (p) => p.routeWebSocket(/\/ws\/chat\//, (ws) => {
      if (away) {
        ws.close({ code: 1011, reason: 'test: away' });
        return;
      }
      current = ws;
      ws.connectToServer();
    }),
  });
  try {
    await connected(page);
    await server.post('gaps', 'g0');
    await message(page, 'g0').waitFor(WAIT);
    away = true;
    await current.close({ code: 1011, reason: 'test: dropped' });
    await page.locator('#status[data-state="reconnecting"]').waitFor(WAIT);
    // Ids 2..7 are stored while the page is away; only the newest 3 (5, 6, 7) are kept.
    for (let n = 1; n <= 6; n += 1) await server.post('gaps', `g${n}`);
    away = false;
    await message(page, 'g6').waitFor(WAIT);
    await connected(page);
    const notice = page.locator('#log li.event');
    await notice.waitFor(WAIT);
    assert.match(await notice.textContent(), /older messages \(2–4, 3 in all\) are no longer available/);
    assert.deepEqual(await shown(page), ['g0', 'g4', 'g5', 'g6']);
    // The notice sits where the missing messages would be.
    const order = await page.locator('#log li').evaluateAll((items) => items.map((li) => li.textContent));
    assert.ok(order[1].includes('no longer available'), JSON.stringify(order));
    await server.post('gaps', 'g7');
    await message(page, 'g7').waitFor(WAIT);
    await page.screenshot({ path: join(artifacts, 'chat-gap.png') });
    assert.deepEqual(problems, []);
  } finally {
    await close();
    await server.stop();
  }
});

test('history reset on the server (a fresh data dir): the page says so, shows the new history, sends its own once', async () => {
  const first = await Server.start();
  const { page, problems, close } = await open(first, '/r/phoenix');
  let second;
  try {
    await connected(page);
    for (const text of ['old 1', 'old 2', 'old 3']) await first.post('phoenix', text);
    await message(page, 'old 3').waitFor(WAIT);
    await first.stop();
    await page.locator('#status[data-state="reconnecting"]').waitFor(WAIT);
    await say(page, 'mine, written before the reset');
    await page.locator('#log li.pending', { hasText: 'mine, written' }).waitFor(WAIT);
    await page.screenshot({ path: join(artifacts, 'chat-pending.png') });
    // Same address, empty data dir: ids start again at 1, in a new epoch.
    second = await Server.start({ bind: first.host });
    await second.post('phoenix', 'new 1');
    await page.locator('#log li.event', { hasText: 'history was reset' }).waitFor(WAIT);
    await message(page, 'new 1').waitFor(WAIT);
    await message(page, 'mine, written before the reset').waitFor(WAIT);
    await page.locator('#log li.pending').waitFor({ state: 'detached', ...WAIT });
    await connected(page);
    await second.post('phoenix', 'new 2');
    await message(page, 'new 2').waitFor(WAIT);
    await showsExactlyWhatIsStored(page, second, 'phoenix');
    assert.equal(await page.locator('#log li', { hasText: 'old' }).count(), 0, 'the old history is gone');
    assert.equal(await page.locator('#log li.event').count(), 1);
    await page.screenshot({ path: join(artifacts, 'chat-reset.png') });
    const unexpected = problems.filter((p) => !/ERR_CONNECTION_REFUSED|WebSocket connection to/.test(p));
    assert.deepEqual(unexpected, []);
  } finally {
    await close();
    await first.stop();
    await second?.stop();
  }
});

// ---- the picker -------------------------------------------------------------------

test('the picker: Enter with nothing typed joins lobby; quiet rooms with history are offered; /r/%E0 explains', async () => {
  const server = await Server.start();
  const opened = [];
  try {
    await server.post('written-earlier', 'nobody is here any more');
    const busy = await open(server, '/r/busy');
    opened.push(busy);
    await connected(busy.page);
    await say(busy.page, 'someone is here');
    await message(busy.page, 'someone is here').waitFor(WAIT);

    const picker = await open(server, '/');
    opened.push(picker);
    await picker.page.locator('#room-list a', { hasText: 'busy (1)' }).waitFor(WAIT);
    const recent = picker.page.locator('#recent-list a', { hasText: 'written-earlier' });
    await recent.waitFor(WAIT);
    assert.equal(await recent.getAttribute('href'), '/r/written-earlier');
    // Rooms with people in them are in the first list only.
    assert.equal(await picker.page.locator('#recent-list a', { hasText: 'busy' }).count(), 0);
    assert.equal(await picker.page.evaluate(() => document.activeElement.id), 'room-input');
    await picker.page.press('#room-input', 'Enter');
    await picker.page.waitForURL(`${server.url}/r/lobby`, WAIT);
    await connected(picker.page);

    const bad = await open(server, '/r/%E0');
    opened.push(bad);
    await bad.page.locator('#picker').waitFor(WAIT);
    await bad.page.locator('#room-hint.invalid', { hasText: 'not a room address' }).waitFor(WAIT);
    assert.equal(await bad.page.locator('#chat').isHidden(), true);
    await bad.page.locator('#recent-list a', { hasText: 'written-earlier' }).waitFor(WAIT);
    await bad.page.screenshot({ path: join(artifacts, 'chat-bad-address.png') });
    for (const { problems } of opened) assert.deepEqual(problems, []);
  } finally {
    for (const { close } of opened) await close();
    await server.stop();
  }
});

// ---- contrast ---------------------------------------------------------------------

test('borders of text fields reach 3:1 against what is around them, light and dark', async () => {
  const server = await Server.start();
  const opened = [];
  try {
    for (const colorScheme of ['light', 'dark']) {
      for (const path of ['/', '/r/contrast']) {
        const view = await open(server, path, { contextOptions: { colorScheme } });
        opened.push(view);
        const fields = path === '/' ? ['#room-input'] : ['#message-input', '#name-input'];
        await view.page.locator(fields[0]).waitFor(WAIT);
        if (path !== '/') await view.page.locator('#name-input').waitFor(WAIT);
        for (const field of fields) {
          const ratios = await view.page.locator(field).evaluate((el) => {
            const rgb = (color) => color.match(/[\d.]+/g).slice(0, 3).map(Number);
            const luminance = (color) => {
              const [r, g, b] = rgb(color).map((v) => v / 255).map((v) => (v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4));
              return 0.2126 * r + 0.7152 * g + 0.0722 * b;
            };
            const contrast = (a, b) => {
              const [x, y] = [luminance(a), luminance(b)].sort((p, q) => q - p);
              return (x + 0.05) / (y + 0.05);
            };
            /** The first opaque background from `node` up. */
            const backdrop = (node) => {
              for (; node; node = node.parentElement) {
                const color = getComputedStyle(node).backgroundColor;
                if (!/rgba\(.*,\s*0\)$/.test(color) && color !== 'transparent') return color;
              }
              return 'rgb(255, 255, 255)';
            };
            const border = getComputedStyle(el).borderTopColor;
            return { inside: contrast(border, backdrop(el)), outside: contrast(border, backdrop(el.parentElement)) };
          });
          assert.ok(ratios.inside >= 3 && ratios.outside >= 3, `${colorScheme} ${field}: ${JSON.stringify(ratios)}`);
        }
      }
    }
  } finally {
    for (const { close } of opened) await close();
    await server.stop();
  }
});

// ---- the timeline -----------------------------------------------------------------


test('while the tab is hidden the title counts new messages; only new messages are read out', async () => {
  const server = await Server.start();
  await postMany(server, 'news', ['old 1', 'old 2', 'old 3'], 1);
  const { page, problems, close } = await open(server, '/r/news');
  try {
    await connected(page);
    await message(page, 'old 3').waitFor(WAIT);
    assert.equal(await page.title(), '#news · livechat');
    // The timeline is a log, but not a live region: history is not read out.
    assert.equal(await page.locator('#log').getAttribute('role'), 'log');
    assert.equal(await page.locator('#log').getAttribute('aria-live'), 'off');
    assert.equal(await page.locator('#announcer').getAttribute('aria-live'), 'polite');
    assert.equal(await page.locator('#announcer').textContent(), '');

    await setHidden(page, true);
    for (const text of ['new 1', 'new 2', 'new 3']) await server.post('news', text);
    await message(page, 'new 3').waitFor(WAIT);
    await until(async () => (await page.title()) === '(3) #news · livechat', 'the title counts 3');
    // The page's own message is not unread.
    await say(page, 'mine, while away');
    await message(page, 'mine, while away').waitFor(WAIT);
    assert.equal(await page.title(), '(3) #news · livechat');
    assert.deepEqual(await page.locator('#announcer p').allTextContents(),
      ['anonymous: new 1', 'anonymous: new 2', 'anonymous: new 3']);

    await setHidden(page, false);
    assert.equal(await page.title(), '#news · livechat');
    await server.post('news', 'seen at once');
    await message(page, 'seen at once').waitFor(WAIT);
    assert.equal(await page.title(), '#news · livechat');
    assert.deepEqual(problems, []);
  } finally {
    await close();
    await server.stop();
  }
});

test('times: today\'s show the time, older ones the date too; a separator starts each day', async () => {
  const server = await Server.start();
  await postMany(server, 'days', ['weeks ago', 'also weeks ago', 'yesterday', 'today 1', 'today 2'], 1);
  const now = Date.now();
  // The server stamps messages when it stores them; the history answer is given older stamps
  // for the first three (ids and texts stay the server's).
  const stamps = { 'weeks ago': now - 40 * 86_400_000, 'also weeks ago': now - 40 * 86_400_000, yesterday: now - 86_400_000 };
  const { page, problems, close } = await open(server, '/r/days', {
    contextOptions: { locale: 'en-US', timezoneId: 'UTC' },
    setup: (p) => p.route(/\/chat\/history\//, async (route) => {
      const response = await route.fetch();
      const answer = await response.json();
      for (const item of answer.chat_history) item.ts = stamps[item.message] ?? item.ts;
      await route.fulfill({ response, json: answer });
    }),
  });
  try {
    await connected(page);
    await message(page, 'today 2').waitFor(WAIT);
    const items = await page.locator('#log li.message').evaluateAll((lis) => lis.map((li) => ({
      day: li.querySelector('.day')?.textContent ?? null,
      time: li.querySelector('time').textContent,
      text: li.querySelector('.text').textContent,
    })));
    const old = new Date(stamps['weeks ago']);
    assert.deepEqual(items.map(({ day }) => day), [
      old.toLocaleDateString('en-US', { dateStyle: 'full', timeZone: 'UTC' }), null, 'Yesterday', 'Today', null,
    ]);
    const timeOnly = /^\d{1,2}:\d{2}\s?[AP]M$/;
    assert.match(items[3].time, timeOnly);
    assert.match(items[4].time, timeOnly);
    for (const item of items.slice(0, 3)) {
      assert.doesNotMatch(item.time, timeOnly);
      assert.match(item.time, /\d{1,2}:\d{2}\s?[AP]M$/, 'date and time');
    }
    assert.ok(items[0].time.includes(String(old.getUTCFullYear())) || items[0].time.includes(old.toLocaleDateString('en-US', { month: 'short', timeZone: 'UTC' })),
      items[0].time);
    // A live message of today goes under today's separator, without one of its own.
    await server.post('days', 'today 3');
    await message(page, 'today 3').waitFor(WAIT);
    assert.equal(await page.locator('#log li.message', { hasText: 'today 3' }).locator('.day').count(), 0);
    assert.equal(await page.locator('#log .day').count(), 3);
    assert.deepEqual(problems, []);
  } finally {
    await close();
    await server.stop();
  }
});

test('an empty room says so; the composer has focus, grows with lines, and Escape loses nothing', async () => {
  const server = await Server.start();
  const { page, problems, close } = await open(server, '/r/quiet-room');
  try {
    await connected(page);
    const empty = page.locator('#empty');
    await empty.waitFor(WAIT);
    assert.equal(await empty.textContent(), 'No messages yet: say hello.');
    assert.equal(await page.evaluate(() => document.activeElement.id), 'message-input');

    const input = page.locator('#message-input');
    const height = () => input.evaluate((el) => el.getBoundingClientRect().height);
    const one = await height();
    await page.keyboard.type('first line');
    await page.keyboard.press('Shift+Enter');
    await page.keyboard.type('second line');
    await page.keyboard.press('Shift+Enter');
    await page.keyboard.type('third line');
    assert.equal(await input.inputValue(), 'first line\nsecond line\nthird line');
    const three = await height();
    assert.ok(three > one + 20, `grows with its lines (${one} -> ${three})`);
    await page.keyboard.press('Escape');
    assert.equal(await input.inputValue(), 'first line\nsecond line\nthird line', 'Escape keeps the draft');
    await input.fill(Array.from({ length: 40 }, (_, n) => `line ${n}`).join('\n'));
    const tall = await height();
    const scrolls = await input.evaluate((el) => el.scrollHeight > el.clientHeight);
    assert.ok(tall <= 161 && tall > three, `stops growing at its maximum (${tall})`);
    assert.ok(scrolls, 'then scrolls');
    await input.fill('hello, empty room');
    await page.keyboard.press('Enter');
    await message(page, 'hello, empty room').waitFor(WAIT);
    assert.equal(await empty.isHidden(), true);
    assert.ok(Math.abs(await height() - one) < 2, 'back to one line once sent');
    assert.deepEqual(problems, []);
  } finally {
    await close();
    await server.stop();
  }
});

test('"Load older messages" pages back from the keyboard and keeps the reading position', async () => {
  const server = await Server.start();
  await postMany(server, 'archive', Array.from({ length: 150 }, (_, n) => `m${n + 1}`), 1);
  const { page, problems, close } = await open(server, '/r/archive');
  try {
    await connected(page);
    await message(page, 'm150').waitFor(WAIT);
    assert.equal(await page.locator('#log li.message').count(), 100);
    assert.equal((await shown(page))[0], 'm51');
    const older = page.locator('#older');
    await older.waitFor(WAIT);
    // Read from the top: m51 is where the eye is.
    await page.locator('#scroller').evaluate((el) => { el.scrollTop = 0; });
    const top = () => message(page, 'm51').evaluate((el) => el.getBoundingClientRect().top);
    const before = await top();
    await older.focus();
    await page.keyboard.press('Enter');
    await page.locator('#log li.message .text', { hasText: /^m1$/ }).waitFor({ state: 'attached', ...WAIT });
    assert.equal(await page.locator('#log li.message').count(), 150);
    assert.deepEqual(await shown(page), Array.from({ length: 150 }, (_, n) => `m${n + 1}`));
    assert.ok(Math.abs(await top() - before) < 2, `m51 stayed in place (${before} -> ${await top()})`);
    // That was all: the button gives way to the start of the room, focus stays in the timeline.
    await page.locator('#start').waitFor(WAIT);
    assert.equal(await older.isHidden(), true);
    assert.equal(await page.evaluate(() => document.activeElement.id), 'scroller');
    assert.deepEqual(problems, []);
  } finally {
    await close();
    await server.stop();
  }
});

test('the first history read fails: the page follows the room live, and reads it again until it has it', async () => {
  const server = await Server.start();
  await postMany(server, 'retry', ['stored 1', 'stored 2'], 1);
  let refusing = true;
  let refused = 0;
  const { page, problems, close } = await open(server, '/r/retry', {
    setup: (p) => p.route(/\/chat\/history\//, (route) => {
      if (!refusing) return route.continue();
      refused += 1;
      return route.fulfill({ status: 503, json: { error: 'test: store unavailable' } });
    }),
  });
  try {
    await connected(page);
    await server.post('retry', 'live 1');
    await message(page, 'live 1').waitFor(WAIT);
    assert.deepEqual(await shown(page), ['live 1']);
    // Asked more than once (backing off) while refused; then it comes.
    await until(() => refused >= 2, 'the history is asked again');
    refusing = false;
    await message(page, 'stored 1').waitFor(WAIT);
    await showsExactlyWhatIsStored(page, server, 'retry');
    await server.post('retry', 'live 2');
    await message(page, 'live 2').waitFor(WAIT);
    await showsExactlyWhatIsStored(page, server, 'retry');
    const unexpected = problems.filter((p) => !/status of 503/.test(p));
    assert.deepEqual(unexpected, []);
  } finally {
    await close();
    await server.stop();
  }
});

// ---- who is here, typing ----------------------------------------------------------

const here = dirname(fileURLToPath(import.meta.url));


/** `count` WebSocket connections named u1..u<count>, from a Node process of their own. */
class Crowd {
  static async join(server, room, count) {
    const child = spawn(process.execPath,
      [join(here, 'crowd.mjs'), `ws://${server.host}/ws/chat/${room}/`, String(count)],
      { stdio: ['pipe', 'pipe', 'inherit'] });
    const crowd = Object.assign(new Crowd(), { child, lines: createInterface({ input: child.stdout }) });
    await crowd.said('open');
    return crowd;
  }

  said(word) {
    return new Promise((resolve, reject) => {
      const onLine = (line) => {
        if (line === word) {
          this.lines.off('line', onLine);
          resolve();
        }
      };
      this.lines.on('line', onLine);
      this.child.once('exit', (code) => reject(new Error(`the crowd exited (${code}) before "${word}"`)));
    });
  }

  async leave() {
    const closed = this.said('closed');
    this.child.stdin.write('close\n');
    await closed;
  }

  kill() {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill();
  }
}

test('two named users: each lists the other, sees the other typing (not itself), and sees them leave; screenshots', async () => {
  const server = await Server.start();
  const opened = [];
  try {
    const sent = [];
    const alice = await open(server, '/r/team');
    const bob = await open(server, '/r/team', {
      setup: (p) => p.on('websocket', (socket) => socket.on('framesent', ({ payload }) => sent.push(payload))),
    });
    opened.push(alice, bob);
    await nameAs(alice.page, 'Alice');
    await nameAs(bob.page, 'Bob');
    // Each lists both, itself first.
    for (const [{ page }, me, other] of [[alice, 'Alice', 'Bob'], [bob, 'Bob', 'Alice']]) {
      await page.locator('#people-list li', { hasText: other }).waitFor(WAIT);
      assert.deepEqual(await people(page), [`${me} (you)`, other]);
      await page.locator('#people-count[data-people="2"][data-connections="2"]').waitFor(WAIT);
      assert.equal(await page.locator('#people-count').getAttribute('aria-live'), 'polite');
    }
    // Bob came after Alice: she was told, quietly; nobody is told about themselves.
    await alice.page.locator('#log li.event.presence', { hasText: 'Bob joined' }).waitFor(WAIT);
    // Read out politely, once (the timeline itself is not a live region).
    assert.deepEqual(await alice.page.locator('#announcer p', { hasText: 'joined' }).allTextContents(), ['Bob joined']);
    assert.equal(await alice.page.locator('#log li.presence', { hasText: 'Alice' }).count(), 0);
    assert.equal(await bob.page.locator('#log li.presence', { hasText: 'Bob' }).count(), 0);

    await say(alice.page, 'Morning! The build is green again.');
    await say(bob.page, 'Great, I will deploy after lunch.');
    await say(alice.page, 'Ping me if the migration takes long.\nIt ran for 4 minutes on staging.');
    for (const { page } of [alice, bob]) await message(page, 'Ping me').waitFor(WAIT);
    // Own messages are told apart, by the chosen name here.
    assert.equal(await alice.page.locator('#log li.mine').count(), 2);
    assert.equal(await bob.page.locator('#log li.mine').count(), 1);
    assert.equal(await bob.page.locator('#log li.mine .text').textContent(), 'Great, I will deploy after lunch.');
    assert.equal(await author(bob.page, 'Morning!').textContent(), 'Alice');

    // Everything Bob's page ever writes in its typing line, and what Alice's line says when
    // each message shows up.
    await bob.page.evaluate(() => {
      window.typingSeen = [];
      new MutationObserver(() => window.typingSeen.push(document.getElementById('typing').textContent))
        .observe(document.getElementById('typing'), { childList: true, characterData: true, subtree: true });
    });
    await alice.page.evaluate(() => {
      window.typingWhenShown = {};
      new MutationObserver((changes) => {
        for (const change of changes) {
          for (const node of change.addedNodes) {
            if (node.classList?.contains('message')) {
              window.typingWhenShown[node.querySelector('.text').textContent] = document.getElementById('typing').textContent;
            }
          }
        }
      }).observe(document.getElementById('log'), { childList: true });
    });
    const typingBefore = sent.length;
    await bob.page.locator('#message-input').pressSequentially('On it, rolling out', { delay: 20 });
    const typing = alice.page.locator('#typing', { hasText: 'Bob is typing…' });
    await typing.waitFor(WAIT);
    assert.equal(await alice.page.locator('#typing').getAttribute('aria-live'), 'polite');

    await alice.page.screenshot({ path: join(artifacts, 'chat-page.png') });
    // Phone: the list of people opens on demand; Bob keeps typing for the picture.
    await alice.page.setViewportSize({ width: 390, height: 844 });
    await alice.page.locator('#people-details summary').click();
    await until(async () => {
      await bob.page.locator('#message-input').press('.');
      return typing.isVisible();
    }, 'Alice sees Bob typing on her phone');
    await alice.page.screenshot({ path: join(artifacts, 'chat-page-phone.png') });
    const overflow = await alice.page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `no horizontal scrolling at phone width (${overflow}px)`);
    if (process.env.UPDATE_SCREENSHOT) {
      copyFileSync(join(artifacts, 'chat-page.png'), join(root, 'docs', 'chat-page.png'));
      copyFileSync(join(artifacts, 'chat-page-phone.png'), join(root, 'docs', 'chat-page-phone.png'));
    }
    await alice.page.setViewportSize({ width: 1280, height: 800 });

    // Bob sends what he typed: the line goes away with his message, not 3 s later.
    await bob.page.locator('#message-input').press('Enter');
    await message(alice.page, 'On it, rolling out').waitFor(WAIT);
    const shownWith = await alice.page.evaluate(() => window.typingWhenShown);
    const typed = Object.keys(shownWith).find((text) => text.startsWith('On it, rolling out'));
    assert.equal(shownWith[typed], '', 'no "typing" line once his message is there');
    // Typing frames went out, far fewer than the keys pressed (at most one per 2 s).
    const typingFrames = sent.slice(typingBefore).filter((payload) => payload === '{"typing":true}');
    assert.ok(typingFrames.length >= 1 && typingFrames.length < 10, JSON.stringify(typingFrames));
    // Bob's page never says Bob is typing (it only ever held nothing).
    assert.deepEqual([...new Set(await bob.page.evaluate(() => window.typingSeen))].filter(Boolean), []);

    // Bob leaves: Alice is told, and he is off her list.
    await bob.close();
    opened.splice(opened.indexOf(bob), 1);
    await alice.page.locator('#log li.event.presence', { hasText: 'Bob left' }).waitFor(WAIT);
    await alice.page.locator('#people-count[data-people="1"][data-connections="1"]').waitFor(WAIT);
    assert.deepEqual(await people(alice.page), ['Alice (you)']);
    for (const { problems } of opened) assert.deepEqual(problems, []);
  } finally {
    for (const { close } of opened) await close();
    await server.stop();
  }
});

test('1,000 stored messages and 1,000 people: the page holds to its caps and counts right', async () => {
  const server = await Server.start();
  await postMany(server, 'crowd', Array.from({ length: 1000 }, (_, n) => `stored ${n + 1}`));
  const opened = [];
  const frames = [];
  let crowd;
  try {
    const watcher = await open(server, '/r/crowd', {
      setup: (p) => p.on('websocket', (ws) => ws.on('framereceived', ({ payload }) => frames.push(String(payload)))),
    });
    opened.push(watcher);
    const { page } = watcher;
    await nameAs(page, 'Watcher');
    // The server announces Watcher's own join (once a second, with whoever else joined): waited
    // for, so that the crowd's 1,000 are not announced with it, 1,001 being over what one event
    // lists (it would say `truncated`, and no list the server gives names more than 1,000).
    await until(() => frames.some((f) => f.includes('"joined":[{"name":"Watcher"}]')), 'Watcher\'s join announced');
    const messages = () => page.locator('#log li.message').count();
    assert.equal(await messages(), 100, 'the latest page');

    // 1,000 people come in (a process of their own: u1..u1000, without presence or meta).
    crowd = await Crowd.join(server, 'crowd', 1000);
    await page.locator('#people-count[data-people="1001"][data-connections="1001"]').waitFor(WAIT);
    assert.equal(await page.locator('#people-list li').count(), 200, 'at most 200 names in the DOM');
    assert.equal((await people(page))[0], 'Watcher (you)');
    assert.equal(await page.locator('#people-more').textContent(), 'and 801 more');
    // Told in one quiet line, not a thousand.
    const joins = page.locator('#log li.presence');
    assert.equal(await joins.count(), 1);
    assert.match(await joins.first().textContent(), /^u\d+, u\d+ and 998 others joined$/);
    // Messages still come through to a room of 1,001.
    await postMany(server, 'crowd', Array.from({ length: 20 }, (_, n) => `to everyone ${n + 1}`), 5);
    await say(page, 'hello, crowd');
    await message(page, 'hello, crowd').waitFor(WAIT);
    await page.locator('#log li.message .text', { hasText: /^to everyone 20$/ }).waitFor(WAIT);

    // A page that comes in now gets a list the server cut at 1,000 names: it says so.
    const late = await open(server, '/r/crowd');
    opened.push(late);
    await nameAs(late.page, 'Late');
    await late.page.locator('#people-count[data-connections="1002"]').waitFor(WAIT);
    assert.match(await late.page.locator('#people-count').textContent(), /^1,00\d\+ people here/);
    assert.match(await late.page.locator('#people-more').textContent(), /the server lists only the first 1,000/);
    assert.equal(await late.page.locator('#people-list li').count(), 200);
    // (A join and a leave within one announcement cancel out: Late stays until seen.)
    await page.locator('#log li.presence', { hasText: 'Late joined' }).waitFor(WAIT);
    await late.close();
    opened.splice(opened.indexOf(late), 1);
    await page.locator('#log li.presence', { hasText: 'Late left' }).waitFor(WAIT);
    await page.locator('#people-count[data-people="1001"][data-connections="1001"]').waitFor(WAIT);

    // They all leave: told on the same quiet line, and the counts come back.
    await crowd.leave();
    await page.locator('#people-count[data-people="1"][data-connections="1"]').waitFor(WAIT);
    assert.deepEqual(await page.locator('#log li.presence').allTextContents(), [
      (await joins.first().textContent()), 'Late joined', (await page.locator('#log li.presence').last().textContent()),
    ]);
    assert.match(await page.locator('#log li.presence').last().textContent(), /^Late, u\d+ and 999 others left$/);
    assert.deepEqual(await people(page), ['Watcher (you)']);

    // 1,100 more, live: the oldest make way, the newest 500 stay.
    await postMany(server, 'crowd', Array.from({ length: 1100 }, (_, n) => `live ${n + 1}`));
    await until(async () => (await page.locator('#log li.message .text', { hasText: /^live \d+$/ }).count()) === 500,
      'the newest 500 live ones shown');
    assert.equal(await messages(), 500);
    const older = page.locator('#older');
    const loadOlder = async () => {
      await older.click();
      await page.locator('#older:not([aria-disabled])').waitFor(WAIT);
    };
    // Reading older messages: up to 2,000; back at the end, the newest 500 again.
    for (let loads = 1; loads <= 3; loads += 1) await loadOlder();
    assert.equal(await messages(), 800);
    await page.locator('#scroller').evaluate((el) => { el.scrollTop = el.scrollHeight; });
    await until(async () => (await messages()) === 500, 'back to 500 at the end');
    // Paging back through 2,121 messages: never more than 2,000 in the DOM; past it the newest
    // give way, and live ones wait behind "Show newest messages".
    const { chat_history: [newest] } = await (await fetch(`${server.url}/chat/history/?room=crowd&limit=1`)).json();
    for (let loads = 1; loads <= 16; loads += 1) {
      await loadOlder();
      assert.ok(await messages() <= 2000, `${await messages()} messages after ${loads} pages back`);
    }
    assert.equal(await messages(), 2000);
    const lastShown = Number(await page.locator('#log li.message').last().getAttribute('data-id'));
    assert.ok(lastShown < newest.id, `the newest gave way (${lastShown} < ${newest.id})`);
    await server.post('crowd', 'while paging back');
    const jump = page.locator('#jump', { hasText: 'Show newest messages' });
    await jump.waitFor(WAIT);
    assert.equal(await message(page, 'while paging back').count(), 0);
    await jump.click();
    await message(page, 'while paging back').waitFor(WAIT);
    await page.locator('#log li.message .text', { hasText: new RegExp(`^${newest.message}$`) }).waitFor(WAIT);
    assert.ok(await messages() <= 500);
    await older.waitFor(WAIT);
    assert.deepEqual(watcher.problems, []);
  } finally {
    crowd?.kill();
    for (const { close } of opened) await close();
    await server.stop();
  }
});

test('a presence change marked truncated: the page reads the whole list again', async () => {
  const server = await Server.start();
  const opened = [];
  let toPage = null;
  try {
    // More than 1,000 joining in one second is needed for the server to send one: the test
    // adds such a frame to what the real server sends (the page cannot tell).
    const watcher = await open(server, '/r/many', {
      setup: (p) => p.routeWebSocket(/\/ws\/chat\//, (ws) => {
        toPage = ws;
        ws.connectToServer();
      }),
    });
    opened.push(watcher);
    await nameAs(watcher.page, 'Watcher');
    const others = [];
    for (const name of ['Ann', 'Ben']) {
      const view = await open(server, '/r/many');
      opened.push(view);
      others.push(view);
      await nameAs(view.page, name);
    }
    await watcher.page.locator('#people-count[data-people="3"][data-connections="3"]').waitFor(WAIT);
    // Ben leaves; the frame that comes says only that the list was too long to send.
    await others[1].close();
    opened.splice(opened.indexOf(others[1]), 1);
    await watcher.page.locator('#log li.presence', { hasText: 'Ben left' }).waitFor(WAIT);
    const reread = watcher.page.waitForRequest(/\/chat\/presence\/\?room=many(&name=Watcher)?$/, WAIT);
    toPage.send(JSON.stringify({ event: 'presence', room: 'many', members: 7, joined: [{ name: 'Cid' }], left: [], truncated: true }));
    await reread;
    // The list is the server's again: Cid was never there.
    await watcher.page.locator('#people-count[data-people="2"][data-connections="2"]').waitFor(WAIT);
    assert.deepEqual(await people(watcher.page), ['Watcher (you)', 'Ann']);
    for (const { problems } of opened) assert.deepEqual(problems, []);
  } finally {
    for (const { close } of opened) await close();
    await server.stop();
  }
});
