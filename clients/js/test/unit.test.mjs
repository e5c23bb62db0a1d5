// The parts of the client that need no server: backoff, nonces, events, options.
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
