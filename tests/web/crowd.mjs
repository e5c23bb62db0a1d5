// A crowd for the chat page tests: opens COUNT WebSocket connections to URL, named u1..uCOUNT
// (`?name=u<k>`), prints "open" once every one is open, closes them all when it reads "close" on
// stdin (or stdin ends), prints "closed" and exits. Run by page.test.mjs in a process of its own,
// with Node's own WebSocket where it has one (Node 22+), else the `ws` package (Debian's Node 18).
//
// Usage: node crowd.mjs ws://HOST/ws/chat/ROOM/ COUNT
import { createInterface } from 'node:readline';

const WebSocket = globalThis.WebSocket ?? (await import('ws')).WebSocket;

const [url, countText] = process.argv.slice(2);
const count = Number(countText);
if (!url || !Number.isSafeInteger(count) || count < 1) {
  console.error('usage: crowd.mjs WS_URL COUNT');
  process.exit(2);
}

const sockets = [];
let open = 0;
let closing = false;
for (let k = 1; k <= count; k += 1) {
  const socket = new WebSocket(`${url}?name=u${k}`);
  socket.addEventListener('open', () => {
    open += 1;
    if (open === count) console.log('open');
  });
  socket.addEventListener('close', (event) => {
    if (!closing) {
      console.error(`u${k} closed early: ${event.code} ${event.reason}`);
      process.exit(1);
    }
  });
  sockets.push(socket);
}

createInterface({ input: process.stdin }).on('line', (line) => {
  if (line.trim() === 'close') closeAll();
}).on('close', closeAll);

function closeAll() {
  if (closing) return;
  closing = true;
  let left = sockets.length;
  for (const socket of sockets) {
    const done = () => {
      left -= 1;
      if (left === 0) {
        console.log('closed');
        process.exit(0);
      }
    };
    if (socket.readyState === WebSocket.CLOSED) done();
    else {
      socket.addEventListener('close', done);
      socket.close(1000, 'bye');
    }
  }
}
