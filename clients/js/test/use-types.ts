// Compiled (not run) by `tsc --noEmit --strict` in the tests: the types read as a user of the
// package writes against them.
import { EMPTY_PRESENCE, LivechatClient, syncDiff, syncState, type MessageWithMeta } from '../livechat.js';

const chat = new LivechatClient({ room: 'lobby', url: 'http://127.0.0.1:8003', name: 'Ada' });
chat.on('message', (frame: MessageWithMeta) => frame.id.toFixed());
chat.on('presence', ({ state, joined }) => state.members + joined.length);
chat.on('refused', ({ kind, error }) => `${kind}: ${error}`);
chat.on('edited', ({ id, message, edited_ts }) => [id, message, edited_ts]);
const nonce: string = chat.send({ text: 'hello' }, { replyTo: 3 });
const state = syncDiff(syncState(EMPTY_PRESENCE, { members: 1, users: [{ name: 'Ada', connections: 1 }] }), { joined: [{ id: 'bo' }] });
export { nonce, state };
