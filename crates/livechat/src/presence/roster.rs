//! The roster: for each room this node serves, every node's members (this node's from the hub,
//! the others' from the engine), and what changed since the last announcement.
//!
//! A change flips a user in or out of the room only when its total of connections over all
//! nodes goes from 0 or to 0, so a user with two connections joins once and leaves once; a join
//! and a leave of the same user between two announcements cancel out. A node's changes come
//! numbered (`seq`); one out of order asks for that node's state to be read again.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::time::Instant;

use super::{Diff, MAX_LISTED, PresenceList, TYPING_EVERY, UserKey, typing_frame, user_key};
use crate::message::Author;
use crate::outgoing::OutgoingFrame;
use crate::room::RoomName;
use crate::webhooks::{Event, EventKind, WebhookSettings};

const SHARDS: usize = 16;

pub struct Roster {
    shards: Box<[Mutex<HashMap<RoomName, RoomView>>]>,
    hasher: RandomState,
    /// This node's name among the nodes.
    node: Arc<str>,
    /// This node's changes are relayed to other nodes: kept until `take_local_changes`.
    relays: bool,
    /// Told when there is something to relay.
    to_relay: tokio::sync::Notify,
    /// Who comes and goes is told to the app (webhooks): each room keeps what it was told.
    telling: AtomicBool,
}

/// One node's members of a room.
#[derive(Debug, Default, Clone)]
pub struct NodeView {
    /// The last change of this node applied.
    pub seq: u64,
    /// Its connections, anonymous ones included.
    pub members: u64,
    pub people: HashMap<UserKey, Person>,
}

/// A named user's connections on one node.
#[derive(Debug, Clone)]
pub struct Person {
    pub user: Arc<Author>,
    pub connections: u32,
}

/// A node's change to a room, as relayed: the new connection count of each user it names (0:
/// gone); `full`: these are all its users (the others are gone).
#[derive(Debug, Clone)]
pub struct NodeChange {
    pub seq: u64,
    pub members: u64,
    pub full: bool,
    pub people: Vec<(UserKey, Person)>,
}

/// What became of another node's change.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    Done,
    /// Already applied, or about a room this node does not serve.
    Ignored,
    /// Changes of that node were missed: read its state again (`replace_node`).
    Missed,
}

#[derive(Default)]
struct RoomView {
    nodes: HashMap<Arc<str>, NodeView>,
    joined: HashMap<UserKey, Arc<Author>>,
    left: HashMap<UserKey, Arc<Author>>,
    members_changed: bool,
    /// This node's users changed since the last relay, and whether all must be sent.
    outgoing: Option<Outgoing>,
    /// The last change of this node relayed.
    relayed_seq: u64,
    /// When each user's typing was last let through.
    typing: HashMap<UserKey, Instant>,
    /// What the app was last told of the room (when it is told); `None` until the other nodes'
    /// members were read, as the room opened here.
    told: Option<Told>,
}

/// Who the app was told is in a room, and whether this node was the one telling.
#[derive(Default)]
struct Told {
    users: HashMap<UserKey, Arc<Author>>,
    occupied: bool,
    /// This node told last time: it tells of the room's emptying too.
    by_me: bool,
}

#[derive(Default)]
struct Outgoing {
    /// Who they are: a user that left is no longer among this node's people.
    users: HashMap<UserKey, Arc<Author>>,
    full: bool,
}

impl Roster {
    pub fn new(node: &str, relays: bool) -> Arc<Self> {
        Arc::new(Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            node: Arc::from(node),
            relays,
            to_relay: tokio::sync::Notify::new(),
            telling: AtomicBool::new(false),
        })
    }

    /// From now on, rooms keep track of who the app was told is in them (webhooks).
    pub fn tell_the_app(&self) {
        self.telling.store(true, Ordering::Relaxed);
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    fn shard(&self, room: &RoomName) -> MutexGuard<'_, HashMap<RoomName, RoomView>> {
        let index = self.hasher.hash_one(room) as usize % SHARDS;
        self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn each_room(&self, mut visit: impl FnMut(&RoomName, &mut RoomView)) {
        for shard in &self.shards {
            let mut rooms = shard.lock().unwrap_or_else(|p| p.into_inner());
            for (room, view) in rooms.iter_mut() {
                visit(room, view);
            }
        }
    }

    /// A local connection joined `room`.
    pub fn arrive(&self, room: &RoomName, user: Option<&Arc<Author>>) {
        self.local_change(room, user, true);
    }

    /// A local connection left `room`.
    pub fn depart(&self, room: &RoomName, user: Option<&Arc<Author>>) {
        self.local_change(room, user, false);
    }

    fn local_change(&self, room: &RoomName, user: Option<&Arc<Author>>, arrived: bool) {
        let mut rooms = self.shard(room);
        let view = rooms.entry(room.clone()).or_insert_with(|| RoomView {
            // Alone (no other node), the app has been told of nobody; with others, the room is
            // opened once their members are read (`opened`).
            told: (!self.relays && self.telling.load(Ordering::Relaxed)).then(Told::default),
            ..RoomView::default()
        });
        let node = view.nodes.entry(self.node.clone()).or_default();
        node.members = if arrived {
            node.members + 1
        } else {
            node.members.saturating_sub(1)
        };
        view.members_changed = true;
        let named = user.and_then(|user| Some((user_key(user)?, user)));
        if let Some((key, user)) = &named {
            let was_here = view.total(key) > 0;
            let node = view.nodes.entry(self.node.clone()).or_default();
            let person = node.people.entry(key.clone()).or_insert_with(|| Person {
                user: Arc::clone(user),
                connections: 0,
            });
            if arrived {
                person.connections += 1;
            } else {
                person.connections = person.connections.saturating_sub(1);
                if person.connections == 0 {
                    node.people.remove(key);
                }
            }
            view.note(key, user, was_here);
        }
        if self.relays {
            if view.outgoing.is_none() {
                self.to_relay.notify_one();
            }
            let outgoing = view.outgoing.get_or_insert_with(Outgoing::default);
            if let Some((key, user)) = named {
                outgoing.users.insert(key, user.clone());
            }
        }
    }

    /// Who is in `room`, as far as this node knows.
    pub fn list(&self, room: &RoomName) -> PresenceList {
        let rooms = self.shard(room);
        match rooms.get(room) {
            Some(view) => PresenceList::of(room, view.nodes.values()),
            None => PresenceList::of(room, []),
        }
    }

    /// This node's members of `room`.
    pub fn local(&self, room: &RoomName) -> NodeView {
        let rooms = self.shard(room);
        rooms
            .get(room)
            .and_then(|view| view.nodes.get(&self.node))
            .cloned()
            .unwrap_or_default()
    }

    /// Another node's change to `room`.
    pub fn apply(&self, room: &RoomName, node: &str, change: NodeChange) -> Applied {
        if node == &*self.node {
            return Applied::Ignored;
        }
        let mut rooms = self.shard(room);
        let Some(view) = rooms.get_mut(room) else {
            return Applied::Ignored;
        };
        if change.full {
            let state = NodeView {
                seq: change.seq,
                members: change.members,
                people: change.people.into_iter().collect(),
            };
            view.replace_node(node, state, true);
            return Applied::Done;
        }
        let Some(known) = view.nodes.get(node) else {
            return Applied::Missed;
        };
        if change.seq <= known.seq {
            return Applied::Ignored;
        }
        if change.seq != known.seq + 1 {
            return Applied::Missed;
        }
        for (key, person) in change.people {
            let was_here = view.total(&key) > 0;
            let user = person.user.clone();
            if let Some(known) = view.nodes.get_mut(node) {
                if person.connections == 0 {
                    known.people.remove(&key);
                } else {
                    known.people.insert(key.clone(), person);
                }
            }
            view.note(&key, &user, was_here);
        }
        if let Some(known) = view.nodes.get_mut(node) {
            known.seq = change.seq;
            if known.members != change.members {
                known.members = change.members;
                view.members_changed = true;
            }
        }
        Applied::Done
    }

    /// Another node's whole state in `room`, read from where it keeps it; `announce`: its
    /// differences from what was known are joins and leaves (not when the room was just opened
    /// here: nobody here has been told anything yet).
    pub fn replace_node(&self, room: &RoomName, node: &str, state: NodeView, announce: bool) {
        if node == &*self.node {
            return;
        }
        let mut rooms = self.shard(room);
        if let Some(view) = rooms.get_mut(room) {
            if announce {
                view.replace_node(node, state, true);
            } else {
                view.set_node(node, state);
            }
        }
    }

    /// `room`'s other nodes' members have been read as it opened here: what the app was told of
    /// it is who they have (this node's own members, come meanwhile, are news).
    pub fn opened(&self, room: &RoomName) {
        if !self.telling.load(Ordering::Relaxed) {
            return;
        }
        let mut rooms = self.shard(room);
        let Some(view) = rooms.get_mut(room) else {
            return;
        };
        if view.told.is_none() {
            let others = view.nodes.iter().filter(|(node, _)| **node != self.node);
            let mut told = Told::default();
            for (_, node) in others {
                told.occupied |= node.members > 0;
                for (key, person) in &node.people {
                    told.users.insert(key.clone(), person.user.clone());
                }
            }
            view.told = Some(told);
        }
    }

    /// What the app is to be told of every room since the last call (joins and leaves of users,
    /// rooms occupied and vacated), when this node is the one telling: of a room, the node with
    /// the lowest name among those with members there, or, when it emptied, the one that told
    /// last. The others keep track without telling.
    pub fn take_presence_events(&self, now_ms: u64, wanted: &WebhookSettings) -> Vec<Event> {
        let mut events = Vec::new();
        self.each_room(|room, view| {
            let Some(told) = view.told.take() else {
                return;
            };
            let mut current: HashMap<UserKey, Arc<Author>> = HashMap::new();
            let mut steward: Option<&Arc<str>> = None;
            let mut occupied = false;
            for (name, node) in &view.nodes {
                if node.members > 0 {
                    occupied = true;
                    steward = Some(steward.map_or(name, |lowest| lowest.min(name)));
                }
                for (key, person) in &node.people {
                    current
                        .entry(key.clone())
                        .or_insert_with(|| person.user.clone());
                }
            }
            let tells = match steward {
                Some(steward) => **steward == *self.node,
                None => told.by_me,
            };
            if tells {
                let mut event = |kind, user: Option<&Author>| {
                    if wanted.wants(kind) {
                        events.push(Event::presence(kind, room, now_ms, user));
                    }
                };
                if occupied && !told.occupied {
                    event(EventKind::RoomOccupied, None);
                }
                for (key, user) in &current {
                    if !told.users.contains_key(key) {
                        event(EventKind::Join, Some(user));
                    }
                }
                for (key, user) in &told.users {
                    if !current.contains_key(key) {
                        event(EventKind::Leave, Some(user));
                    }
                }
                if !occupied && told.occupied {
                    event(EventKind::RoomVacated, None);
                }
            }
            view.told = Some(Told {
                users: current,
                occupied,
                by_me: tells,
            });
        });
        events
    }

    /// Forgets the nodes not in `live` (gone without a word): their users leave.
    pub fn retain_nodes(&self, live: &HashSet<String>) {
        let node = self.node.clone();
        self.each_room(|_, view| {
            let gone: Vec<Arc<str>> = view
                .nodes
                .keys()
                .filter(|name| **name != node && !live.contains(&***name))
                .cloned()
                .collect();
            for name in gone {
                view.replace_node(&name, NodeView::default(), true);
            }
        });
    }

    /// Whether a typing user may be told to the room now (at most once per `TYPING_EVERY`);
    /// the frame if so.
    pub fn typing(&self, room: &RoomName, user: &Author) -> Option<OutgoingFrame> {
        let key = user_key(user)?;
        let mut rooms = self.shard(room);
        let view = rooms.get_mut(room)?;
        let now = Instant::now();
        if let Some(last) = view.typing.get(&key)
            && now.duration_since(*last) < TYPING_EVERY
        {
            return None;
        }
        view.typing.insert(key, now);
        Some(typing_frame(room, user))
    }

    /// Every room's presence event for what changed since the last call; rooms without local
    /// members are forgotten once their last change was relayed.
    pub fn take_announcements(&self) -> Vec<(RoomName, OutgoingFrame)> {
        let mut announcements = Vec::new();
        let node = self.node.clone();
        let now = Instant::now();
        for shard in &self.shards {
            let mut rooms = shard.lock().unwrap_or_else(|p| p.into_inner());
            rooms.retain(|room, view| {
                if let Some(frame) = view.take_diff(room) {
                    announcements.push((room.clone(), frame));
                }
                view.typing
                    .retain(|_, last| now.duration_since(*last) < TYPING_EVERY);
                let local = view.nodes.get(&node).map_or(0, |local| local.members);
                local > 0 || view.outgoing.is_some()
            });
        }
        announcements
    }

    /// This node's changes since the last call, numbered, to relay to the other nodes.
    pub fn take_local_changes(&self) -> Vec<(RoomName, NodeChange)> {
        let mut changes = Vec::new();
        let node = self.node.clone();
        self.each_room(|room, view| {
            let Some(outgoing) = view.outgoing.take() else {
                return;
            };
            view.relayed_seq += 1;
            let local = view.nodes.get(&node).cloned().unwrap_or_default();
            let people = if outgoing.full {
                local.people.into_iter().collect()
            } else {
                outgoing
                    .users
                    .into_iter()
                    .map(|(key, user)| {
                        let connections = local.people.get(&key).map_or(0, |p| p.connections);
                        (key, Person { user, connections })
                    })
                    .collect()
            };
            changes.push((
                room.clone(),
                NodeChange {
                    seq: view.relayed_seq,
                    members: local.members,
                    full: outgoing.full,
                    people,
                },
            ));
        });
        changes
    }

    /// The next relay of every room carries all of this node's users (the other nodes may have
    /// missed changes, or Redis lost them).
    pub fn relay_everything(&self) {
        self.each_room(|_, view| {
            view.outgoing = Some(Outgoing {
                full: true,
                ..Default::default()
            })
        });
        self.to_relay.notify_one();
    }

    /// Resolves when there are local changes to relay.
    pub async fn changed(&self) {
        self.to_relay.notified().await;
    }

    /// Rooms this node serves.
    pub fn rooms(&self) -> Vec<RoomName> {
        let mut rooms = Vec::new();
        self.each_room(|room, _| rooms.push(room.clone()));
        rooms
    }
}

impl RoomView {
    /// A user's connections over all nodes.
    fn total(&self, key: &UserKey) -> u32 {
        self.nodes
            .values()
            .filter_map(|node| node.people.get(key))
            .map(|person| person.connections)
            .sum()
    }

    /// Records a flip of `key` in or out of the room, if its total crossed zero.
    fn note(&mut self, key: &UserKey, user: &Arc<Author>, was_here: bool) {
        let is_here = self.total(key) > 0;
        if was_here == is_here {
            return;
        }
        let (into, from) = if is_here {
            (&mut self.joined, &mut self.left)
        } else {
            (&mut self.left, &mut self.joined)
        };
        if from.remove(key).is_none() {
            into.insert(key.clone(), user.clone());
        }
    }

    fn replace_node(&mut self, node: &str, state: NodeView, announce: bool) {
        let old = self.nodes.get(node).map(|old| old.people.clone());
        let mut keys: Vec<(UserKey, Arc<Author>)> = state
            .people
            .iter()
            .map(|(key, person)| (key.clone(), person.user.clone()))
            .collect();
        keys.extend(
            old.into_iter()
                .flatten()
                .map(|(key, person)| (key, person.user)),
        );
        let before: Vec<bool> = keys.iter().map(|(key, _)| self.total(key) > 0).collect();
        let members_before = self.nodes.get(node).map_or(0, |node| node.members);
        self.members_changed |= announce && members_before != state.members;
        self.set_node(node, state);
        if announce {
            for ((key, user), was_here) in keys.iter().zip(before) {
                self.note(key, user, was_here);
            }
        }
    }

    fn set_node(&mut self, node: &str, state: NodeView) {
        if state.members == 0 && state.people.is_empty() {
            self.nodes.remove(node);
        } else {
            self.nodes.insert(Arc::from(node), state);
        }
    }

    /// The presence event for what changed since the last one, if anything did.
    fn take_diff(&mut self, room: &RoomName) -> Option<OutgoingFrame> {
        if self.joined.is_empty() && self.left.is_empty() && !self.members_changed {
            return None;
        }
        let joined = std::mem::take(&mut self.joined);
        let left = std::mem::take(&mut self.left);
        self.members_changed = false;
        let truncated = joined.len() > MAX_LISTED || left.len() > MAX_LISTED;
        let diff = Diff {
            event: "presence",
            room,
            members: self.nodes.values().map(|node| node.members).sum(),
            joined: joined
                .values()
                .take(MAX_LISTED)
                .map(|user| &**user)
                .collect(),
            left: left.values().take(MAX_LISTED).map(|user| &**user).collect(),
            truncated,
        };
        Some(OutgoingFrame::json(&diff))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> Arc<Author> {
        Arc::new(Author {
            id: None,
            name: Some(name.into()),
        })
    }

    fn diff(roster: &Roster) -> Option<serde_json::Value> {
        let (_, frame) = roster.take_announcements().into_iter().next()?;
        serde_json::from_slice(&frame.into_bytes()[2..]).ok()
    }

    fn room() -> RoomName {
        RoomName::parse("r").unwrap()
    }

    fn change(seq: u64, members: u64, name: &str, connections: u32) -> NodeChange {
        NodeChange {
            seq,
            members,
            full: false,
            people: vec![(
                Arc::from(format!("n:{name}")),
                Person {
                    user: user(name),
                    connections,
                },
            )],
        }
    }

    #[test]
    fn a_user_joins_once_and_a_join_and_leave_in_one_period_cancel_out() {
        let roster = Roster::new("here", false);
        let (room, ada, bo) = (room(), user("ada"), user("bo"));
        roster.arrive(&room, Some(&ada));
        roster.arrive(&room, Some(&ada));
        roster.arrive(&room, None);
        let first = diff(&roster).unwrap();
        assert_eq!(first["joined"], serde_json::json!([{"name": "ada"}]));
        assert_eq!(first["members"], 3);
        roster.arrive(&room, Some(&bo));
        roster.depart(&room, Some(&bo));
        roster.depart(&room, Some(&ada));
        let second = diff(&roster).unwrap();
        assert_eq!(second["joined"], serde_json::json!([]), "bo came and went");
        assert_eq!(
            second["left"],
            serde_json::json!([]),
            "ada still has a connection"
        );
        assert_eq!(second["members"], 2);
        assert!(diff(&roster).is_none(), "nothing changed since");
    }

    #[test]
    fn other_nodes_changes_apply_in_order_and_a_dead_node_leaves() {
        let roster = Roster::new("here", true);
        let room = room();
        roster.arrive(&room, Some(&user("ada")));
        roster.replace_node(&room, "there", NodeView::default(), false);
        assert_eq!(
            roster.apply(&room, "there", change(1, 1, "bo", 1)),
            Applied::Missed
        );
        let full = NodeChange {
            full: true,
            ..change(1, 1, "bo", 1)
        };
        assert_eq!(roster.apply(&room, "there", full), Applied::Done);
        assert_eq!(
            roster.apply(&room, "there", change(1, 1, "bo", 1)),
            Applied::Ignored
        );
        assert_eq!(
            roster.apply(&room, "there", change(3, 1, "cy", 1)),
            Applied::Missed
        );
        assert_eq!(
            roster.apply(&room, "there", change(2, 2, "cy", 1)),
            Applied::Done
        );
        assert_eq!(roster.list(&room).members, 3);
        diff(&roster);
        roster.retain_nodes(&HashSet::from(["here".to_owned()]));
        let left = diff(&roster).unwrap();
        assert_eq!(left["left"].as_array().unwrap().len(), 2, "{left}");
        assert_eq!(left["members"], 1);
        let (_, relayed) = roster.take_local_changes().pop().unwrap();
        assert!(relayed.seq == 1 && relayed.members == 1 && relayed.people.len() == 1);
    }

    fn told(roster: &Roster) -> Vec<String> {
        let wanted = WebhookSettings::new(&[], 1 << 20);
        roster
            .take_presence_events(1, &wanted)
            .into_iter()
            .map(|event| event.body)
            .collect()
    }

    #[test]
    fn the_app_is_told_of_comings_and_goings_once() {
        let roster = Roster::new("local", false);
        roster.tell_the_app();
        let ada = user("Ada");
        roster.arrive(&room(), Some(&ada));
        roster.arrive(&room(), Some(&ada));
        roster.arrive(&room(), None);
        let events = told(&roster);
        assert_eq!(events.len(), 2, "{events:?}");
        assert!(events[0].contains("room_occupied") && events[1].contains("\"join\""));
        assert!(told(&roster).is_empty(), "told once");
        roster.depart(&room(), Some(&ada));
        assert!(told(&roster).is_empty(), "Ada has another connection");
        roster.depart(&room(), Some(&ada));
        roster.depart(&room(), None);
        let events = told(&roster);
        assert_eq!(events.len(), 2, "{events:?}");
        assert!(events[0].contains("\"leave\"") && events[1].contains("room_vacated"));
    }
}
