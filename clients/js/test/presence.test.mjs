// syncState and syncDiff, the pure presence functions, without a server or a browser.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EMPTY_PRESENCE, presenceList, syncDiff, syncState, userKey } from '../livechat.js';

const alice = { id: 'alice', name: 'Alice' };
const bob = { name: 'Bob' };

function tracked() {
  const told = { joined: [], left: [] };
  return [told, (key) => told.joined.push(key), (key) => told.left.push(key)];
}

test('userKey tells users apart as the server does: a token id, else a chosen name', () => {
  assert.equal(userKey(alice), 'i:alice');
  assert.equal(userKey({ name: 'alice' }), 'n:alice');
  assert.equal(userKey({}), null);
  assert.equal(userKey(null), null);
});

test('a snapshot from nothing: everyone listed joins, anonymous connections count only', () => {
  const [told, onJoin, onLeave] = tracked();
  const state = syncState(EMPTY_PRESENCE, { members: 3, users: [{ ...alice, connections: 1 }, { ...bob, connections: 1 }, {}] }, onJoin, onLeave);
  assert.deepEqual(state, {
    members: 3,
    users: { 'i:alice': { id: 'alice', name: 'Alice', connections: 1 }, 'n:Bob': { name: 'Bob', connections: 1 } },
    truncated: false,
  });
  assert.deepEqual(told, { joined: ['i:alice', 'n:Bob'], left: [] });
  assert.deepEqual(EMPTY_PRESENCE.users, {}, 'the state given is not changed');
});

test('a later snapshot tells only who came and who went', () => {
  const first = syncState(EMPTY_PRESENCE, { members: 2, users: [{ ...alice, connections: 1 }, { ...bob, connections: 1 }] });
  const [told, onJoin, onLeave] = tracked();
  const second = syncState(first, { members: 2, users: [{ ...alice, connections: 2 }] }, onJoin, onLeave);
  assert.deepEqual(told, { joined: [], left: ['n:Bob'] });
  assert.deepEqual(Object.keys(second.users), ['i:alice']);
  assert.equal(second.users['i:alice'].connections, 2);
  assert.deepEqual(Object.keys(first.users), ['i:alice', 'n:Bob'], 'the earlier state is unchanged');
});

test('a truncated snapshot does not make the users it could not list leave', () => {
  const first = syncState(EMPTY_PRESENCE, { members: 2, users: [{ ...alice, connections: 1 }, { ...bob, connections: 1 }] });
  const [told, onJoin, onLeave] = tracked();
  const second = syncState(first, { members: 5000, users: [{ ...alice, connections: 1 }], truncated: true }, onJoin, onLeave);
  assert.deepEqual(told, { joined: [], left: [] });
  assert.equal(second.truncated, true);
  assert.deepEqual(Object.keys(second.users).sort(), ['i:alice', 'n:Bob']);
});

test('changes are set operations: a join of someone listed, a leave of someone gone, change nothing', () => {
  const first = syncState(EMPTY_PRESENCE, { members: 1, users: [{ ...alice, connections: 1 }] });
  const [told, onJoin, onLeave] = tracked();
  let state = syncDiff(first, { members: 2, joined: [alice, bob], left: [] }, onJoin, onLeave);
  state = syncDiff(state, { members: 1, joined: [], left: [bob, { name: 'Carol' }] }, onJoin, onLeave);
  state = syncDiff(state, { members: 4, joined: [], left: [] }, onJoin, onLeave);
  assert.deepEqual(told, { joined: ['n:Bob'], left: ['n:Bob'] });
  assert.equal(state.members, 4, 'empty lists: only the count changed');
  assert.deepEqual(Object.keys(state.users), ['i:alice']);
  assert.equal(state.users['i:alice'].connections, 1, 'a joined user already listed keeps what the list said');
});

test('presenceList sorts by name, then id', () => {
  const state = syncState(EMPTY_PRESENCE, { members: 3, users: [{ name: 'carol', connections: 1 }, { id: 'zed', connections: 1 }, { ...alice, connections: 1 }] });
  assert.deepEqual(presenceList(state).map((user) => user.name ?? user.id), ['Alice', 'carol', 'zed']);
});
