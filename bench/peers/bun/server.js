// The seed's protocol on Bun's built-in WebSocket server (uWebSockets, native pub/sub), a peer
// for side-by-side benchmarks beside bench/peers/node-ws, which it mirrors: rooms at
// /ws/chat/{room}/, {"message": X} to every member (sender included), POST /chat/send/ and
// GET /chat/history/. In memory, nothing stored.
//
// Each member subscribes to its room's topic; a message is framed once and written to every
// subscriber by Bun (server.publish, which reaches the sender too; ws.publish would skip it).
// Bun's defaults otherwise: no compression, and a subscriber with more than 16 MiB waiting to
// be written is skipped by publish (node-ws queues without bound). No idle timeout, as node-ws.
// Run: node_modules/.bin/bun server.js (PORT, default 8003; listens on 127.0.0.1).
const port = Number(process.env.PORT || 8003);

const json = (body, status = 200) =>
  new Response(body, { status, headers: { 'Content-Type': 'application/json' } });

const server = Bun.serve({
  hostname: '127.0.0.1',
  port,
  async fetch(request, server) {
    const url = new URL(request.url);
    const path = url.pathname;
    // As node-ws: the whole request target must be the room path (no query string).
    const match = (path + url.search).match(/^\/ws\/chat\/(\w+)\/?$/);
    if (match && server.upgrade(request, { data: { room: match[1] } })) return undefined;
    if (request.method === 'POST' && path.startsWith('/chat/send')) {
      try {
        const body = JSON.parse(await request.text());
        server.publish(body.room ?? 'lobby', JSON.stringify({ message: body.message }));
        return json('{"message":"Message sent!"}');
      } catch {
        return json('{"error":"bad request"}', 400);
      }
    }
    if (request.method === 'GET' && path.startsWith('/chat/history')) {
      return json('{"chat_history":[]}');
    }
    return new Response(null, { status: 404 });
  },
  websocket: {
    maxPayloadLength: 1024 * 1024,
    perMessageDeflate: false,
    idleTimeout: 0,
    open(ws) {
      ws.subscribe(ws.data.room);
    },
    message(ws, data) {
      try {
        server.publish(ws.data.room, JSON.stringify({ message: JSON.parse(data).message }));
      } catch {
        ws.send('{"error":"invalid JSON"}');
      }
    },
  },
});

console.error(`listening on http://127.0.0.1:${server.port}`);
