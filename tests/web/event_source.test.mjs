// A browser's own EventSource on GET /sse/chat/{room}/: the room's messages with their ids, and
// after the server ends the stream, the browser's reconnect with Last-Event-ID gets what was
// sent meanwhile, with no gap and no duplicate.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { launchChromium } from './chromium.mjs';

const binary = process.env.LIVECHAT_BIN;
const KEY = 'event-source-test-key';
const WAIT = { timeout: 15_000 };

let livechat;
let base;
let browser;

before(async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'livechat-event-source-'));
  livechat = spawn(binary, ['--bind', '127.0.0.1:0', '--data-dir', dataDir, '--api-key', KEY], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const port = await new Promise((resolve, reject) => {
    livechat.once('exit', (code) => reject(new Error(`livechat exited (${code}) before listening`)));
    createInterface({ input: livechat.stderr }).on('line', (line) => {
      const match = line.match(/listening on http:\/\/[^:]+:(\d+)/);
      if (match) resolve(Number(match[1]));
    });
  });
  base = `http://127.0.0.1:${port}`;
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  livechat?.kill('SIGTERM');
});

async function post(path, body) {
  const answer = await fetch(base + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` },
    body: JSON.stringify(body),
  });
  assert.ok(answer.ok, `${path}: ${answer.status} ${await answer.text()}`);
}

test('EventSource follows a room and resumes with Last-Event-ID after the stream ends', async () => {
  const page = await (await browser.newContext()).newPage();
  await page.goto(`${base}/healthz`);
  await page.evaluate(() => {
    window.received = [];
    window.opened = 0;
    window.closes = [];
    const source = new EventSource('/sse/chat/stream/?name=Eve');
    source.onopen = () => { window.opened += 1; };
    source.onmessage = (event) => {
      window.received.push({ id: event.lastEventId, data: JSON.parse(event.data) });
    };
    source.addEventListener('close', (event) => window.closes.push(JSON.parse(event.data)));
  });
  await page.waitForFunction(() => window.opened === 1, null, WAIT);
  await post('/chat/send/', { room: 'stream', message: 'one' });
  await page.waitForFunction(() => window.received.length === 1, null, WAIT);

  // The server ends the stream (a moderator's disconnect); the browser comes back by itself.
  await post('/api/disconnect', { user: 'Eve' });
  await page.waitForFunction(() => window.closes.length === 1, null, WAIT);
  await post('/chat/send/', { room: 'stream', message: 'two' });
  await page.waitForFunction(() => window.opened === 2, null, WAIT);
  await post('/chat/send/', { room: 'stream', message: 'three' });
  await page.waitForFunction(() => window.received.some((event) => event.data.message === 'three'), null, WAIT);

  const received = await page.evaluate(() => window.received);
  const messages = received.filter((event) => event.data.message !== undefined);
  assert.deepEqual(messages.map((event) => [event.id, event.data.message]),
    [['1', 'one'], ['2', 'two'], ['3', 'three']]);
  assert.deepEqual(await page.evaluate(() => window.closes), [{ code: 4003, reason: 'disconnected' }]);
});
