// What the client's tests run against: the real livechat binary (LIVECHAT_BIN, else the debug
// build of this repository), started on port 0 with the port read back from its log, and a TCP
// relay in front of it that can cut every connection, refuse new ones, hold what the server
// sends, hold what a client sends and pass it on late (after the client has given up on that
// connection), refuse WebSocket upgrades (as a proxy that breaks WebSockets does), and follow
// the server to a new port after a restart.
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { WebSocket } from 'ws';
import { EventSource } from 'eventsource';

const here = dirname(fileURLToPath(import.meta.url));
const binary = process.env.LIVECHAT_BIN ?? join(here, '../../../target/debug/livechat');

export { WebSocket, EventSource };

/** The server's API key in these tests (publishing and moderating over HTTP). */
export const KEY = 'livechat-client-test-key';

/** A livechat process on `dataDir` (a fresh temporary one when absent): `{ port, url, dataDir,
 * stop() }`. */
export async function startServer({ dataDir = mkdtempSync(join(tmpdir(), 'livechat-client-')), args = [] } = {}) {
  const child = spawn(binary, ['--bind', '127.0.0.1:0', '--data-dir', dataDir, '--api-key', KEY, ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  const port = await new Promise((resolve, reject) => {
    exited.then((code) => reject(new Error(`livechat exited (${code}) before listening`)));
    createInterface({ input: child.stderr }).on('line', (line) => {
      const match = line.match(/listening on http:\/\/[^:]+:(\d+)/);
      if (match) resolve(Number(match[1]));
    });
  });
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    dataDir,
    /** SIGTERM, and wait for the exit (a graceful shutdown: everything acknowledged is stored). */
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      return exited;
    },
  };
}

/** A token signed by `livechat token` with `secret`. */
export function mintToken(secret, args) {
  return execFileSync(binary, ['token', ...args], { env: { ...process.env, LIVECHAT_JWT_SECRET: secret }, encoding: 'utf8' }).trim();
}

/** A TCP relay on a port of its own to `127.0.0.1:target`. */
export async function startRelay(target) {
  const pairs = new Set();
  const relay = {
    target,
    refusing: false,
    blockWebSockets: false,
    holding: false,
    held: [],
    /** What the server sent on connections whose client side was cut (`cutClients`). */
    late: [],
    url: null,
    /** Ends every connection through the relay now. */
    cut() {
      for (const pair of pairs) {
        pair.client.destroy();
        pair.upstream.destroy();
      }
      pairs.clear();
    },
    /** Stops passing what the server sends (the client waits); `release()` passes it on. */
    hold() {
      relay.holding = true;
    },
    release() {
      relay.holding = false;
      for (const [client, chunk] of relay.held.splice(0)) if (!client.destroyed) client.write(chunk);
    },
    /** Stops passing what the clients connected now send (later connections pass as usual);
     * `cutClients()` then `releaseUp()` delivers it late. */
    holdUp() {
      for (const pair of pairs) pair.holdingUp = true;
    },
    /** Ends the clients' side of every connection; the server's side stays open. */
    cutClients() {
      for (const pair of pairs) {
        pair.keepUpstream = true;
        pair.client.destroy();
      }
    },
    /** Passes on what the clients sent while held, to the server's side of their connections. */
    releaseUp() {
      for (const pair of pairs) {
        pair.holdingUp = false;
        for (const chunk of pair.heldUp.splice(0)) pair.upstream.write(chunk);
      }
    },
    close() {
      relay.cut();
      return new Promise((resolve) => server.close(resolve));
    },
  };
  const server = createServer((client) => {
    if (relay.refusing) {
      client.destroy();
      return;
    }
    client.once('data', (first) => {
      if (relay.blockWebSockets && /^upgrade:\s*websocket/im.test(first.toString('latin1'))) {
        client.end('HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
        return;
      }
      const upstream = createConnection(relay.target, '127.0.0.1');
      const pair = { client, upstream, heldUp: [], holdingUp: false, keepUpstream: false };
      pairs.add(pair);
      upstream.write(first);
      client.on('data', (chunk) => {
        if (pair.holdingUp) pair.heldUp.push(chunk);
        else upstream.write(chunk);
      });
      upstream.on('data', (chunk) => {
        if (pair.keepUpstream) relay.late.push(chunk.toString('latin1'));
        else if (relay.holding) relay.held.push([client, chunk]);
        else client.write(chunk);
      });
      const end = () => {
        pairs.delete(pair);
        client.destroy();
        upstream.destroy();
      };
      client.on('close', () => {
        if (!pair.keepUpstream) end();
      });
      upstream.on('close', end);
      client.on('error', () => client.destroy());
      upstream.on('error', end);
    });
    client.on('error', () => client.destroy());
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  relay.url = `http://127.0.0.1:${server.address().port}`;
  return relay;
}

/** One HTTP call to the server with its API key: the JSON answer (throws on an error status). */
export async function api(url, method, path, body) {
  const answer = await fetch(url + path, {
    method,
    headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await answer.text();
  if (!answer.ok) throw new Error(`${method} ${path}: ${answer.status} ${text}`);
  return JSON.parse(text);
}

/** Resolves once `condition()` is true (polled every 20 ms), or fails after `ms` naming `what`. */
export async function waitFor(what, condition, ms = 15_000) {
  const deadline = Date.now() + ms;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Every event of `types` a client emits, in order, as `[type, detail]`. */
export function record(client, types) {
  const events = [];
  for (const type of types) client.on(type, (detail) => events.push([type, detail]));
  return events;
}
