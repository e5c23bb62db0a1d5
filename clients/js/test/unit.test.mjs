// The parts of the client that need no server: backoff, nonces, events, options, the handshake probe.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { backoffDelay, Emitter, LivechatClient, newNonce } from '../livechat.js';

test('backoff doubles up to its ceiling, with jitter between half the ceiling and the ceiling', () => {
  const low = (attempt) => backoffDelay(attempt, { initialMs: 500, maxMs: 10_000, random: () => 0 });
  const high = (attempt) => backoffDelay(attempt, { initialMs: 500, maxMs: 10_000, random: () => 1 });
  assert.deepEqual([0, 1, 2, 3, 4, 5, 40].map(high), [500, 1000, 2000, 4000, 8000, 10_000, 10_000]);
  assert.deepEqual([0, 1, 5].map(low), [250, 500, 5000]);
  const spread = new Set(Array.from({ length: 50 }, () => backoffDelay(3)));
  assert.ok(spread.size > 10, 'clients dropped together come back at different times');
});

test('nonces are UUID v4, also where crypto.randomUUID is missing', () => {
  const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
  assert.match(newNonce(), uuid);
  const original = crypto.randomUUID;
  crypto.randomUUID = undefined;
  try {
    assert.match(newNonce(), uuid);
  } finally {
    crypto.randomUUID = original;
  }
});

test('a listener that throws does not keep the others from being told', () => {
  const emitter = new Emitter();
  const told = [];
  const errors = [];
  emitter.on('error', (error) => errors.push(error.message));
  emitter.on('x', () => { throw new Error('listener bug'); });
  const off = emitter.on('x', (detail) => told.push(detail));
  emitter.once('x', (detail) => told.push(`once ${detail}`));
  emitter.emit('x', 1);
  off();
  emitter.emit('x', 2);
  assert.deepEqual(told, [1, 'once 1']);
  assert.deepEqual(errors, ['listener bug', 'listener bug'], 'its error is told, never lost');
});

test('options: a room is required, the url may be http or ws, bounds are kept', () => {
  assert.throws(() => new LivechatClient({ url: 'http://127.0.0.1:1' }), /room/);
  assert.throws(() => new LivechatClient({ room: 'r' }), /url/);
  const client = new LivechatClient({ room: 'r', url: 'wss://chat.example:8443', maxPending: 1, maxMessageBytes: 100 });
  assert.deepEqual(client.bases, { http: 'https://chat.example:8443', ws: 'wss://chat.example:8443' });
  assert.throws(() => client.send('x'.repeat(100)), RangeError);
  client.send('queued while not connected');
  assert.equal(client.pending, 1);
  assert.throws(() => client.send('one too many'), /waiting to be stored/);
});

test('VERSION is the package version', async () => {
  const { readFileSync } = await import('node:fs');
  const { VERSION } = await import('../livechat.js');
  assert.equal(VERSION, JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).version);
});

test('without a WebSocket or an EventSource (Node 20 given neither), connect says what to pass', async () => {
  const saved = [globalThis.WebSocket, globalThis.EventSource];
  delete globalThis.WebSocket;
  delete globalThis.EventSource;
  try {
    const client = new LivechatClient({ room: 'r', url: 'http://127.0.0.1:9', since: null });
    await assert.rejects(client.connect(), /pass `WebSocket`/);
  } finally {
    [globalThis.WebSocket, globalThis.EventSource] = saved;
    if (saved[0] === undefined) delete globalThis.WebSocket;
    if (saved[1] === undefined) delete globalThis.EventSource;
  }
});

/** A WebSocket whose handshake always fails, as a browser shows it: closed 1006, never open. */
class RefusedWebSocket extends EventTarget {
  readyState = 0;
  constructor(url) {
    super();
    this.url = url;
    setTimeout(() => {
      this.readyState = 3;
      this.dispatchEvent(Object.assign(new Event('close'), { code: 1006, reason: '' }));
    }, 0);
  }
  close() {}
}

test("a 401 probe from another page's origin without a token is a drop (its cookies did not go), not a stop", async () => {
  const probed = [];
  const fetch = async (url) => {
    probed.push(url);
    return new Response('{"error":"sign in first"}', { status: 401 });
  };
  const told = [];
  const listen = (client) => ['down', 'stopped'].forEach((type) => client.on(type, (detail) => told.push([type, detail])));
  const hadLocation = 'location' in globalThis;
  globalThis.location = { origin: 'https://app.example' };
  try {
    const options = { room: 'r', url: 'http://127.0.0.1:9', since: null, WebSocket: RefusedWebSocket, fetch };
    const cookieless = new LivechatClient({ ...options, name: 'ann' });
    listen(cookieless);
    await cookieless.connect();
    while (told.length === 0) await new Promise((resolve) => setTimeout(resolve, 5));
    cookieless.close();
    assert.equal(probed[0], 'http://127.0.0.1:9/ws/chat/r/?meta=1&presence=1&name=ann', 'the same URL, over HTTP');
    assert.deepEqual(told[0], ['down', { code: 1006, reason: '', transport: 'websocket', status: 401, body: { error: 'sign in first' } }]);

    // With a token in the URL, the probe carried the same credentials: a stop.
    told.length = 0;
    const tokened = new LivechatClient({ ...options, token: 'bad' });
    listen(tokened);
    await tokened.connect();
    while (told.length === 0) await new Promise((resolve) => setTimeout(resolve, 5));
    assert.deepEqual(told[0], ['stopped', { code: 401, reason: 'sign in first', status: 401, body: { error: 'sign in first' } }]);
  } finally {
    if (!hadLocation) delete globalThis.location;
  }
});
