// The seed's protocol on Node's `ws`: rooms at /ws/chat/{room}/, {"message": X} to every member
// (sender included), POST /chat/send/ and GET /chat/history/. In memory, nothing stored.
'use strict';
const http = require('node:http');
const { WebSocketServer } = require('ws');

const port = Number(process.env.PORT || 8003);
const rooms = new Map();

function broadcast(room, message) {
  const frame = JSON.stringify({ message });
  for (const socket of rooms.get(room) ?? []) socket.send(frame);
}

const server = http.createServer((request, response) => {
  const path = request.url.split('?')[0];
  if (request.method === 'POST' && path.startsWith('/chat/send')) {
    const chunks = [];
    request.on('data', (chunk) => chunks.push(chunk));
    request.on('end', () => {
      try {
        const body = JSON.parse(Buffer.concat(chunks));
        broadcast(body.room ?? 'lobby', body.message);
        response.writeHead(200, { 'Content-Type': 'application/json' });
        response.end('{"message":"Message sent!"}');
      } catch {
        response.writeHead(400, { 'Content-Type': 'application/json' });
        response.end('{"error":"bad request"}');
      }
    });
  } else if (request.method === 'GET' && path.startsWith('/chat/history')) {
    response.writeHead(200, { 'Content-Type': 'application/json' });
    response.end('{"chat_history":[]}');
  } else {
    response.writeHead(404);
    response.end();
  }
});

const sockets = new WebSocketServer({ noServer: true, maxPayload: 1024 * 1024 });
server.on('upgrade', (request, socket, head) => {
  const match = request.url.match(/^\/ws\/chat\/(\w+)\/?$/);
  if (!match) return socket.destroy();
  sockets.handleUpgrade(request, socket, head, (ws) => {
    const room = match[1];
    if (!rooms.has(room)) rooms.set(room, new Set());
    rooms.get(room).add(ws);
    ws.on('message', (data) => {
      try {
        broadcast(room, JSON.parse(data).message);
      } catch {
        ws.send('{"error":"invalid JSON"}');
      }
    });
    ws.on('close', () => rooms.get(room)?.delete(ws));
  });
});

server.listen(port, '127.0.0.1', () => console.error(`listening on http://127.0.0.1:${port}`));
