// What the chat page tests share: the real server (spawned binary, port 0 read back from its log),
// a real redis-server on a free port, Debian's Chromium (one browser for a test file, a fresh
// context per page), and waits for conditions (never fixed sleeps). WEB_FROM_DISK=1 serves the
// page's scripts and style sheet from crates/livechat/web instead of the binary's embedded copy,
// to try a change to the page without rebuilding the server (the test command never sets it).
import { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { launchChromium } from './chromium.mjs';

export const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const binary = process.env.LIVECHAT_BIN ?? join(root, 'target', 'debug', 'livechat');
export const artifacts = join(root, 'test-artifacts');
export const WAIT = { timeout: 15_000 };

export class Server {
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

  /** SIGTERM (or `signal`), and waits until the process is gone. */
  stop(signal = 'SIGTERM') {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return Promise.resolve();
    return new Promise((resolve) => {
      this.child.once('exit', resolve);
      this.child.kill(signal);
    });
  }

  async post(room, message) {
    const response = await fetch(`${this.url}/chat/send/`, {
      method: 'POST',
      body: JSON.stringify({ room, message }),
    });
    assert.equal(response.status, 200);
    return response.json();
  }

  /** The texts the server holds for `room`, oldest first. */
  async stored(room) {
    const answer = await (await fetch(`${this.url}/chat/history/?room=${room}&limit=1000`)).json();
    return answer.chat_history.map((m) => (typeof m.message === 'string' ? m.message : JSON.stringify(m.message)));
  }
}

/** Polls `condition` (a function, maybe async) until it holds: a wait for a state, not a sleep. */
export async function until(condition, what, timeout = WAIT.timeout) {
  const deadline = Date.now() + timeout;
  for (;;) {
    if (await condition()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

export let browser;

before(async () => {
  mkdirSync(artifacts, { recursive: true });
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
});

/** Opens `path` in a fresh context, collecting console errors, page errors, dialogs and any
 * request that leaves the server's origin. */
export async function open(server, path, { viewport = { width: 1280, height: 800 }, setup, contextOptions = {} } = {}) {
  const context = await browser.newContext({ viewport, ...contextOptions });
  const page = await context.newPage();
  // Routes and init scripts, before the page loads.
  if (process.env.WEB_FROM_DISK) {
    await page.route(/\/assets\/[a-z]+\.(js|css)$/, (route) => route.fulfill({
      path: join(root, 'crates', 'livechat', 'web', new URL(route.request().url()).pathname.split('/').pop()),
      contentType: route.request().url().endsWith('.css') ? 'text/css' : 'text/javascript',
    }));
  }
  await setup?.(page);
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

export async function connected(page) {
  await page.locator('#status[data-state="connected"]').waitFor(WAIT);
}

/** A message the server confirmed (not one still pending). */
export function message(page, text) {
  return page.locator('#log li:not(.pending) .text', { hasText: text });
}

/** The confirmed messages the page shows, top to bottom. */
export function shown(page) {
  return page.locator('#log li:not(.pending):not(.event) .text').allTextContents();
}

/** Waits until the page shows exactly what the server holds for `room`, in the same order. */
export async function showsExactlyWhatIsStored(page, server, room) {
  let last;
  try {
    await until(async () => {
      last = { page: await shown(page), stored: await server.stored(room) };
      return JSON.stringify(last.page) === JSON.stringify(last.stored);
    }, 'the page shows what is stored');
  } catch (error) {
    assert.deepEqual(last?.page, last?.stored, error.message);
  }
  assert.equal(new Set(last.page).size, last.page.length, 'no message shown twice');
}

export async function say(page, text, how = 'enter') {
  await page.fill('#message-input', text);
  if (how === 'enter') await page.press('#message-input', 'Enter');
  else await page.click('#send-button');
}

export const SECRET = 'web-test-secret';

/** A token from the real binary's `token` subcommand. */
export function token(sub, name, ...extra) {
  return execFileSync(binary, ['token', '--sub', sub, '--name', name, ...extra], {
    env: { ...process.env, LIVECHAT_JWT_SECRET: SECRET },
  }).toString().trim();
}

export function author(page, text) {
  return page.locator('#log li', { hasText: text }).locator('.author');
}

/** Publishes `texts` over HTTP, `parallel` at a time (their order among a batch is the server's). */
export async function postMany(server, room, texts, parallel = 50) {
  for (let start = 0; start < texts.length; start += parallel) {
    await Promise.all(texts.slice(start, start + parallel).map((text) => server.post(room, text)));
  }
}

/** Makes the page believe its tab is hidden (or visible again), as switching tabs would. */
export function setHidden(page, hidden) {
  return page.evaluate((hidden) => {
    Object.defineProperty(document, 'hidden', { value: hidden, configurable: true });
    Object.defineProperty(document, 'visibilityState', { value: hidden ? 'hidden' : 'visible', configurable: true });
    document.dispatchEvent(new Event('visibilitychange'));
  }, hidden);
}

/** Saves `name` in the page's name form and waits until the page lists itself under it. */
export async function nameAs(page, name) {
  await connected(page);
  await page.fill('#name-input', name);
  await page.press('#name-input', 'Enter');
  await page.locator('#people-list li.you', { hasText: `${name} (you)` }).waitFor(WAIT);
  await connected(page);
}

export function people(page) {
  return page.locator('#people-list li').allTextContents();
}

/** A free TCP port on 127.0.0.1 (redis-server cannot be told to pick one and say which). */
function freePort() {
  return new Promise((resolve, reject) => {
    const probe = createNetServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

/** A real redis-server on a free port, without persistence; `url` for livechat's --redis-url. */
export class RedisServer {
  static async start() {
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), 'livechat-web-redis-'));
    const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '',
      '--appendonly', 'no', '--dir', dir], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise((resolve, reject) => {
      const lines = createInterface({ input: child.stdout });
      child.once('exit', (code) => reject(new Error(`redis-server exited (${code}) before it was ready`)));
      lines.on('line', (line) => {
        if (line.includes('Ready to accept connections')) resolve();
      });
    });
    return Object.assign(new RedisServer(), { child, dir, url: `redis://127.0.0.1:${port}/` });
  }

  stop() {
    return new Promise((resolve) => {
      if (this.child.exitCode !== null || this.child.signalCode !== null) resolve();
      else {
        this.child.once('exit', resolve);
        this.child.kill('SIGTERM');
      }
    }).then(() => rmSync(this.dir, { recursive: true, force: true }));
  }
}
