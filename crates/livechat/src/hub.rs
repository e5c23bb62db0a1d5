//! The room hub: which local WebSocket connections are in which room, and the fan-out of stored
//! messages to them.
//!
//! Each connection has a bounded queue of outgoing frames. Delivery never waits: a frame is
//! serialized once per message and its shared buffer is pushed to every member's queue; a member
//! whose queue is full is a slow consumer and is evicted, so nobody else slows down and memory
//! stays bounded. On shutdown the hub tells every member, present and joining, to close.
//!
//! A member resuming from an id joins *held* (its `Stage`, kept on the member itself): while its
//! replay is read from history, the hub keeps its live frames aside, with their ids, in a box
//! only held members have (bounded like its queue: past it, it is a slow consumer; events are
//! always kept). `Subscription::release` hands over those after the id the replay went up to.
//! A message can be in history (so in the replay) before its live delivery reaches the hub, so a
//! released member still skips messages up to the last one it was sent (`sent_through`), until
//! one past it arrives (or the room's numbering is reset); from then on it is a member like any
//! other. Resuming members also follow the room's events (a reset of its numbering).
//!
//! Frames come in as `OutgoingFrame`s. Members that agreed to permessage-deflate get each room
//! frame compressed: built once and shared by all of them (`outgoing::Variants`); the others get
//! the plain frame. Large messages are compressed before the room's lock is taken
//! (`Hub::prepare`), small ones the first time such a member comes in a delivery.
//!
//! Members come and go in the `Roster` too, under the room's lock, so that presence counts
//! every member the hub has, evicted ones included.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use crate::message::{Author, Frames, StoredMessage};
use crate::outbound::{Closed, Outbound, QueueLimits};
use crate::outgoing::{OutgoingFrame, Variants};
use crate::pacer::Pacer;
use crate::presence::{Roster, UserKey, same_user, user_key};
use crate::room::RoomName;
use crate::websocket::deflate;

/// Rooms are spread over shards so that joins and deliveries in different rooms rarely contend.
const SHARDS: usize = 16;

/// Messages this large or larger are compressed before their room's lock is taken (about 0.1 ms
/// of deflate at this size); see `Hub::prepare`.
const COMPRESS_BEFORE_LOCK_BYTES: usize = 4096;

pub struct Hub {
    shards: Box<[Mutex<HashMap<RoomName, Room>>]>,
    /// Every named member, by user: to tell a user's connections something wherever they are
    /// (their read position moved), or to close them (a disconnect, a ban).
    users: Box<[Mutex<UserShard>]>,
    /// Why members were closed by a moderator, until their connections take it.
    kick_reasons: Mutex<HashMap<u64, Arc<str>>>,
    hasher: RandomState,
    next_member_id: AtomicU64,
    queue_limits: QueueLimits,
    observer: Option<Arc<dyn RoomObserver>>,
    roster: Arc<Roster>,
    pacer: Arc<Pacer>,
    shutting_down: AtomicBool,
    /// Messages handed to members, counted per room batch.
    deliveries: metrics::Counter,
    /// How frames are compressed for members with permessage-deflate.
    compression: deflate::Settings,
}

/// Users' connections, by user, in one of the hub's shards.
type UserShard = HashMap<UserKey, Vec<UserConnection>>;

/// One of a user's connections.
struct UserConnection {
    member: u64,
    room: RoomName,
    outbound: Arc<Outbound>,
}

/// Told, under the room's lock (so in order), when a room gets its first local member and when
/// it loses its last; an engine that shares rooms between nodes subscribes and unsubscribes then.
pub trait RoomObserver: Send + Sync {
    fn room_opened(&self, room: &RoomName);
    fn room_closed(&self, room: &RoomName);
}

#[derive(Default)]
struct Room {
    members: Vec<Member>,
    /// How many members take frames with metadata; the meta frame is only built if any do.
    meta_members: usize,
}

struct Member {
    id: u64,
    outbound: Arc<Outbound>,
    user: Option<Arc<Author>>,
    /// Receives changes to stored messages (`?meta=1`).
    wants_meta: bool,
    /// Receives message frames in the meta shape (with ids).
    meta_frames: bool,
    /// Receives presence and typing events (`?presence=1`).
    presence: bool,
    /// Receives read receipts (`?receipts=1`).
    receipts: bool,
    /// Receives the room's events (it resumed from an id).
    follows: bool,
    stage: Stage,
    /// Agreed to permessage-deflate: frames compressed with this window size.
    deflate_window: Option<u8>,
}

/// What a member takes in its room's list: every connection on the node pays it, idle or not
/// (the idle goal is 1.0 KiB per connection in all, at 18,000), so growing it fails to compile.
pub const MEMBER_BYTES: usize = std::mem::size_of::<Member>();
const _: () = assert!(MEMBER_BYTES <= 48);

/// Where a member is in resuming, kept on the member itself: delivery reads it where it reads
/// the member, and nothing else is searched.
enum Stage {
    Live,
    /// Resuming, its replay not sent yet: its live frames are kept aside (boxed: a live member
    /// does not carry them).
    Held(Box<HeldFrames>),
    /// Released: skips the messages up to `sent_through` (it was sent them), until one past it
    /// arrives or the room's numbering is reset.
    Replayed {
        sent_through: u64,
    },
}

/// How a connection joins a room.
#[derive(Debug, Clone, Default)]
pub struct JoinAs {
    /// Who it is (`None`: anonymous).
    pub user: Option<Arc<Author>>,
    /// Changes to stored messages (`?meta=1`).
    pub meta: bool,
    /// Message frames with their ids (the `?meta=1` shape), even without `meta`: an event
    /// stream needs them for its event ids.
    pub meta_frames: bool,
    /// Resuming from an id: held until released, and following the room's events.
    pub resuming: bool,
    /// Presence and typing events (`?presence=1`).
    pub presence: bool,
    /// Read receipts (`?receipts=1`).
    pub receipts: bool,
    /// permessage-deflate agreed, with the window size the server compresses with.
    pub deflate_window: Option<u8>,
}

/// Who an event frame is for.
#[derive(Clone, Copy)]
pub enum Audience<'a> {
    /// Members that resumed from an id (the room's numbering changed).
    Resuming,
    /// Members with metadata (`?meta=1`): changes to stored messages.
    Meta,
    /// Members with presence on, but for the connections of `except`.
    Presence { except: Option<&'a Author> },
    /// Members with read receipts on.
    Receipts,
}

impl Audience<'_> {
    fn includes(&self, member: &Member) -> bool {
        match self {
            Audience::Resuming => member.follows,
            Audience::Meta => member.wants_meta,
            Audience::Receipts => member.receipts,
            Audience::Presence { except } => {
                member.presence
                    && !except.is_some_and(|except| {
                        member
                            .user
                            .as_deref()
                            .is_some_and(|user| same_user(user, except))
                    })
            }
        }
    }
}

/// A held member's live frames, as queued, each with its message's id (`None`: an event,
/// always kept).
#[derive(Default)]
struct HeldFrames {
    frames: Vec<(Option<u64>, Bytes)>,
    bytes: usize,
}

/// What a released member is handed: its held frames the replay did not send, and the last id
/// among them.
pub struct Released {
    pub frames: Vec<Bytes>,
    pub last_id: Option<u64>,
}

/// A connection's place in a room: the queue of frames to send it (which also tells when it was
/// evicted as a slow consumer). Leaves the room when dropped.
pub struct Subscription {
    pub outbound: Arc<Outbound>,
    hub: Arc<Hub>,
    room: RoomName,
    id: u64,
}

impl Hub {
    /// `pacer` decides when a member is woken for the frames pushed to it.
    pub fn new(
        queue_limits: QueueLimits,
        observer: Option<Arc<dyn RoomObserver>>,
        roster: Arc<Roster>,
        pacer: Arc<Pacer>,
        deliveries: metrics::Counter,
        compression: deflate::Settings,
    ) -> Arc<Self> {
        Arc::new(Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            users: (0..SHARDS).map(|_| Mutex::default()).collect(),
            kick_reasons: Mutex::default(),
            hasher: RandomState::new(),
            next_member_id: AtomicU64::new(1),
            queue_limits,
            observer,
            roster,
            pacer,
            shutting_down: AtomicBool::new(false),
            deliveries,
            compression,
        })
    }

    /// How many rooms have local members.
    pub fn room_count(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    /// Rooms with local members, and how many each has.
    pub fn room_counts(&self) -> Vec<(RoomName, usize)> {
        let mut counts = Vec::new();
        for shard in &self.shards {
            let rooms = shard
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            counts.extend(
                rooms
                    .iter()
                    .map(|(name, room)| (name.clone(), room.members.len())),
            );
        }
        counts
    }

    fn remove_room(&self, rooms: &mut HashMap<RoomName, Room>, room: &RoomName) {
        rooms.remove(room);
        if let Some(observer) = &self.observer {
            observer.room_closed(room);
        }
    }

    fn shard(&self, room: &RoomName) -> MutexGuard<'_, HashMap<RoomName, Room>> {
        let index = self.hasher.hash_one(room) as usize % SHARDS;
        // A panic while holding the lock cannot leave a room half-updated, so poison is ignored.
        self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a connection to `room`.
    pub fn join(self: &Arc<Self>, room: &RoomName, join: JoinAs) -> Subscription {
        let outbound = Arc::new(Outbound::new(self.queue_limits));
        let id = self.next_member_id.fetch_add(1, Ordering::Relaxed);
        let mut rooms = self.shard(room);
        // Members hold the room's name as the hub keeps it: one allocation per room, not each.
        let (name, entry) = match rooms.entry(room.clone()) {
            Entry::Occupied(occupied) => (occupied.key().clone(), occupied.into_mut()),
            Entry::Vacant(vacant) => {
                if let Some(observer) = &self.observer {
                    observer.room_opened(room);
                }
                (room.clone(), vacant.insert(Room::default()))
            }
        };
        entry.meta_members += usize::from(join.meta_frames);
        self.roster.arrive(room, join.user.as_ref());
        // Checked under the shard's lock, which `close_all` takes after setting the flag: a
        // member either sees the flag here or is told by `close_all`.
        if self.shutting_down.load(Ordering::SeqCst) {
            outbound.close(Closed::ShuttingDown);
        }
        if let Some(key) = join.user.as_deref().and_then(user_key) {
            self.user_shard(&key)
                .entry(key)
                .or_default()
                .push(UserConnection {
                    member: id,
                    room: name.clone(),
                    outbound: outbound.clone(),
                });
        }
        entry.members.push(Member {
            id,
            outbound: outbound.clone(),
            user: join.user,
            wants_meta: join.meta,
            meta_frames: join.meta_frames,
            presence: join.presence,
            receipts: join.receipts,
            follows: join.resuming,
            stage: match join.resuming {
                true => Stage::Held(Box::default()),
                false => Stage::Live,
            },
            deflate_window: join.deflate_window,
        });
        Subscription {
            outbound,
            hub: self.clone(),
            room: name,
            id,
        }
    }

    fn user_shard(&self, key: &str) -> MutexGuard<'_, UserShard> {
        let index = self.hasher.hash_one(key) as usize % SHARDS;
        self.users[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes a member out of its user's connections.
    fn forget_user_connection(&self, user: &Author, member: u64) {
        let Some(key) = user_key(user) else { return };
        let mut users = self.user_shard(&key);
        if let Entry::Occupied(mut connections) = users.entry(key) {
            connections
                .get_mut()
                .retain(|connection| connection.member != member);
            if connections.get().is_empty() {
                connections.remove();
            }
        }
    }

    /// Sends `frame` to every connection of `user` on this node but `except` (a member id).
    pub fn tell_user(&self, user: &str, frame: OutgoingFrame, except: Option<u64>) {
        let frame = [frame.into_bytes()];
        let users = self.user_shard(user);
        for connection in users.get(user).into_iter().flatten() {
            if Some(connection.member) != except {
                let _ = connection.outbound.push(&frame, &self.pacer);
            }
        }
    }

    /// Closes the connections of `user` on this node (in `rooms`, or all), telling them `reason`:
    /// 4003, or 4004 when they are not to reconnect. How many were closed.
    pub fn kick_user(
        &self,
        user: &str,
        rooms: Option<&[RoomName]>,
        reason: Arc<str>,
        for_good: bool,
    ) -> usize {
        let users = self.user_shard(user);
        let mut kicked = 0;
        for connection in users.get(user).into_iter().flatten() {
            if rooms.is_some_and(|rooms| !rooms.contains(&connection.room)) {
                continue;
            }
            self.kick_reasons
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(connection.member, reason.clone());
            connection.outbound.close(match for_good {
                true => Closed::KickedForGood,
                false => Closed::Kicked,
            });
            kicked += 1;
        }
        kicked
    }

    /// Calls `visit` with every member's queue, one shard at a time (joins and deliveries in that
    /// shard wait meanwhile, so `visit` must not block).
    pub fn for_each_member(&self, mut visit: impl FnMut(&Outbound)) {
        for shard in &self.shards {
            let rooms = shard
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for member in rooms.values().flat_map(|room| &room.members) {
                visit(&member.outbound);
            }
        }
    }

    /// Tells every member, and any that joins later, to close: the server is shutting down.
    pub fn close_all(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.for_each_member(|outbound| outbound.close(Closed::ShuttingDown));
    }

    /// Sends an event frame to the members of `room` in `audience`.
    pub fn announce(&self, room: &RoomName, audience: Audience<'_>, event: OutgoingFrame) {
        let mut rooms = self.shard(room);
        let Some(entry) = rooms.get_mut(room) else {
            return;
        };
        let resetting = matches!(audience, Audience::Resuming);
        let mut variants = Variants::new(vec![event], &self.compression);
        for member in entry.members.iter_mut() {
            // Ids from before a reset of the room's numbering say nothing of the ones after it.
            if resetting && matches!(member.stage, Stage::Replayed { .. }) {
                member.stage = Stage::Live;
            }
            if !audience.includes(member) {
                continue;
            }
            let event = variants.frames(member.deflate_window);
            match &mut member.stage {
                Stage::Held(held) => {
                    held.keep(&member.outbound, self.queue_limits, None, &event[0])
                }
                _ => {
                    let _ = member.outbound.push(event, &self.pacer);
                }
            }
        }
    }

    /// Ends a member's hold: its kept frames for messages after `replayed_through`, in order.
    /// Live messages up to the last one it is handed are skipped from then on.
    fn release(&self, room: &RoomName, id: u64, replayed_through: u64) -> Released {
        let mut rooms = self.shard(room);
        let mut released = Released {
            frames: Vec::new(),
            last_id: None,
        };
        let Some(entry) = rooms.get_mut(room) else {
            return released;
        };
        let Some(member) = entry.members.iter_mut().find(|member| member.id == id) else {
            return released;
        };
        let Stage::Held(held) = &mut member.stage else {
            return released;
        };
        for (message_id, frame) in std::mem::take(&mut held.frames) {
            match message_id {
                Some(message_id) if message_id <= replayed_through => {}
                Some(message_id) => {
                    released.last_id = Some(message_id);
                    released.frames.push(frame);
                }
                None => released.frames.push(frame),
            }
        }
        member.stage = Stage::Replayed {
            sent_through: released.last_id.unwrap_or(replayed_through),
        };
        released
    }

    fn leave(&self, room: &RoomName, id: u64) {
        let mut rooms = self.shard(room);
        if let Some(entry) = rooms.get_mut(room) {
            entry.remove_where(self, &self.roster, room, |member| member.id == id);
            if entry.members.is_empty() {
                self.remove_room(&mut rooms, room);
            }
        }
    }

    /// Sends stored messages to every local member of their rooms, in the order given per room
    /// (and in the order of the calls). A member gets all of its room's messages from one call
    /// in one push, so it wakes once for them and writes them in one go.
    pub fn deliver(&self, messages: &[StoredMessage]) {
        let mut by_room: Vec<&StoredMessage> = messages.iter().collect();
        // Stable: each room's messages keep their order.
        by_room.sort_by(|a, b| a.room.cmp(&b.room));
        for batch in by_room.chunk_by(|a, b| a.room == b.room) {
            self.deliver_to_room(batch);
        }
    }

    fn deliver_to_room(&self, batch: &[&StoredMessage]) {
        let Some(name) = batch.first().map(|message| &message.room) else {
            return;
        };
        let prepared = self.prepare(name, batch);
        self.push_to_room(name, batch, prepared);
    }

    /// Compressing a large frame takes milliseconds (34 ms at 1 MiB), too long to hold a
    /// shard's lock (joins, leaves and deliveries of its other rooms wait). A batch with a
    /// message of `COMPRESS_BEFORE_LOCK_BYTES` or more (and past the compression's minimum), for
    /// a room with members that agreed to permessage-deflate, is encoded and compressed here,
    /// before the lock is taken for the push, for the windows its members had a moment before
    /// (read under the lock, let go at once). A member that joins in between with another
    /// window gets its frames compressed under the lock, as smaller frames always are (a few
    /// microseconds: less than reading the members twice). Order is kept: frames are still
    /// pushed under the lock, and a room's deliveries come from one caller at a time (the
    /// embedded engine's writer, the Redis subscriber), so they reach each member in commit
    /// order. `None`: nothing to compress first.
    fn prepare(&self, name: &RoomName, batch: &[&StoredMessage]) -> Option<Prepared<'_>> {
        let large = COMPRESS_BEFORE_LOCK_BYTES.max(self.compression.min_bytes);
        if batch
            .iter()
            .all(|message| message.message.get().len() < large)
        {
            return None;
        }
        let (with_meta, windows) = {
            let rooms = self.shard(name);
            let room = rooms.get(name)?;
            // Each (shape, window) that some member takes: a few at most.
            let mut windows: Vec<(bool, u8)> = Vec::new();
            for member in &room.members {
                if let Some(window) = member.deflate_window
                    && !windows.contains(&(member.meta_frames, window))
                {
                    windows.push((member.meta_frames, window));
                }
            }
            (room.meta_members > 0, windows)
        };
        if windows.is_empty() {
            return None;
        }
        let (mut plain, mut meta) = self.encode(batch, with_meta);
        for (meta_frames, window) in windows {
            match meta_frames {
                true => meta.frames(Some(window)),
                false => plain.frames(Some(window)),
            };
        }
        Some(Prepared {
            with_meta,
            plain,
            meta,
        })
    }

    /// The batch's frames, plain and (`with_meta`) with metadata.
    fn encode(&self, batch: &[&StoredMessage], with_meta: bool) -> (Variants<'_>, Variants<'_>) {
        let (mut plain, mut meta) = (Vec::with_capacity(batch.len()), Vec::new());
        for message in batch {
            let frames = Frames::encode(message, with_meta);
            plain.push(frames.plain);
            meta.extend(frames.meta);
        }
        let compression = &self.compression;
        (
            Variants::new(plain, compression),
            Variants::new(meta, compression),
        )
    }

    /// Pushes the batch's frames (`prepared`, or encoded here) to the room's members.
    fn push_to_room(
        &self,
        name: &RoomName,
        batch: &[&StoredMessage],
        prepared: Option<Prepared<'_>>,
    ) {
        let mut rooms = self.shard(name);
        let Some(room) = rooms.get_mut(name) else {
            return;
        };
        let with_meta = room.meta_members > 0;
        let (mut plain, mut meta) = match prepared {
            Some(prepared) if prepared.with_meta || !with_meta => (prepared.plain, prepared.meta),
            // A member taking frames with metadata joined since they were prepared.
            Some(prepared) => (prepared.plain, self.encode(batch, true).1),
            None => self.encode(batch, with_meta),
        };
        let mut lost = Vec::new();
        for member in room.members.iter_mut() {
            let mut frames = if member.meta_frames {
                meta.frames(member.deflate_window)
            } else {
                plain.frames(member.deflate_window)
            };
            match &mut member.stage {
                Stage::Live => {}
                Stage::Held(held) => {
                    for (message, frame) in batch.iter().zip(frames) {
                        held.keep(&member.outbound, self.queue_limits, Some(message.id), frame);
                    }
                    continue;
                }
                &mut Stage::Replayed { sent_through } => {
                    // Once a message past those the replay sent arrives, the member is live.
                    let skip = batch.partition_point(|message| message.id <= sent_through);
                    if skip < batch.len() {
                        member.stage = Stage::Live;
                    }
                    frames = &frames[skip..];
                    if frames.is_empty() {
                        continue;
                    }
                }
            }
            // A closed queue (a slow consumer, now told to close, or shutdown): it leaves here.
            if member.outbound.push(frames, &self.pacer).is_err() {
                lost.push(member.id);
            }
        }
        let reached = room.members.len() - lost.len();
        self.deliveries.increment((reached * batch.len()) as u64);
        if !lost.is_empty() {
            room.remove_where(self, &self.roster, name, |member| lost.contains(&member.id));
            if room.members.is_empty() {
                self.remove_room(&mut rooms, name);
            }
        }
    }
}

/// A batch's frames, encoded and compressed before the room's lock was taken (`Hub::prepare`).
struct Prepared<'a> {
    /// Whether `meta` holds the frames with metadata (the room had members taking them).
    with_meta: bool,
    plain: Variants<'a>,
    meta: Variants<'a>,
}

impl Room {
    fn remove_where(
        &mut self,
        hub: &Hub,
        roster: &Roster,
        name: &RoomName,
        mut condition: impl FnMut(&Member) -> bool,
    ) {
        let meta_members = &mut self.meta_members;
        self.members.retain(|member| {
            let remove = condition(member);
            if remove {
                if let Some(user) = &member.user {
                    hub.forget_user_connection(user, member.id);
                }
                roster.depart(name, member.user.as_ref());
                *meta_members -= usize::from(member.meta_frames);
            }
            !remove
        });
    }
}

impl HeldFrames {
    /// Keeps a frame aside; past the member's queue limits it is a slow consumer, as it would
    /// be with a full queue.
    fn keep(&mut self, outbound: &Outbound, limits: QueueLimits, id: Option<u64>, frame: &Bytes) {
        if self.frames.len() >= limits.frames as usize || self.bytes >= limits.bytes as usize {
            self.frames = Vec::new();
            outbound.close(Closed::SlowConsumer);
            return;
        }
        self.bytes += frame.len();
        self.frames.push((id, frame.clone()));
    }
}

impl Subscription {
    pub fn room(&self) -> &RoomName {
        &self.room
    }

    /// This connection's member id in the hub.
    pub fn member(&self) -> u64 {
        self.id
    }

    /// Why a moderator closed this connection, if one did.
    pub fn kick_reason(&self) -> Option<Arc<str>> {
        self.hub
            .kick_reasons
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id)
    }

    /// Ends the hold of a member that joined resuming: see `Hub::release`.
    pub fn release(&self, replayed_through: u64) -> Released {
        self.hub.release(&self.room, self.id, replayed_through)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.leave(&self.room, self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;
    use std::collections::VecDeque;
    use std::future::poll_fn;
    use std::time::Duration;

    fn hub(queue_capacity: usize) -> Arc<Hub> {
        counting_compressions(queue_capacity, metrics::Counter::noop())
    }

    /// A hub that counts its compressions in `compressed`.
    fn counting_compressions(queue_capacity: usize, compressed: metrics::Counter) -> Arc<Hub> {
        Hub::new(
            QueueLimits::new(queue_capacity, 1 << 20),
            None,
            Roster::new("test", false),
            Pacer::new(Duration::ZERO),
            metrics::Counter::noop(),
            deflate::Settings {
                min_bytes: 256,
                compressed,
            },
        )
    }

    async fn take(subscription: &Subscription) -> Result<VecDeque<Bytes>, Closed> {
        let mut frames = VecDeque::new();
        poll_fn(|cx| subscription.outbound.poll_take(cx, Some(&mut frames))).await?;
        // The JSON, without the WebSocket header.
        Ok(frames.into_iter().map(|frame| frame.slice(2..)).collect())
    }

    fn message(room: &RoomName, id: u64) -> StoredMessage {
        StoredMessage {
            id,
            room: room.clone(),
            message: RawValue::from_string(id.to_string()).unwrap(),
            ts: 0,
            user: None,
            nonce: None,
            extra: None,
        }
    }

    #[tokio::test]
    async fn delivers_to_members_of_the_room_only() {
        let hub = hub(8);
        let a = RoomName::parse("a").unwrap();
        let b = RoomName::parse("b").unwrap();
        let plain = hub.join(&a, JoinAs::default());
        let meta = hub.join(
            &a,
            JoinAs {
                meta: true,
                meta_frames: true,
                ..JoinAs::default()
            },
        );
        let other = hub.join(&b, JoinAs::default());
        hub.deliver(&[message(&a, 1)]);
        assert_eq!(&take(&plain).await.unwrap()[0][..], br#"{"message":1}"#);
        let framed = take(&meta).await.unwrap();
        assert!(framed[0].starts_with(br#"{"id":1,"room":"a""#));
        hub.deliver(&[message(&b, 2)]);
        assert_eq!(take(&other).await.unwrap().len(), 1, "only b's message");
    }

    /// The message ids in frames without metadata (`{"message":ID}`).
    fn ids(frames: &VecDeque<Bytes>) -> Vec<u64> {
        frames
            .iter()
            .map(|frame| {
                let text = std::str::from_utf8(frame).unwrap();
                text.trim_start_matches(r#"{"message":"#)
                    .trim_end_matches('}')
                    .parse()
                    .unwrap()
            })
            .collect()
    }

    fn resuming() -> JoinAs {
        JoinAs {
            resuming: true,
            ..JoinAs::default()
        }
    }

    #[tokio::test]
    async fn a_released_member_skips_live_messages_its_replay_already_sent() {
        let hub = hub(16);
        let room = RoomName::parse("a").unwrap();
        let member = hub.join(&room, resuming());
        // Held: 3 and 4 arrive live while the replay reads history, which already holds 5.
        hub.deliver(&[message(&room, 3), message(&room, 4)]);
        let released = member.release(5);
        assert!(released.frames.is_empty(), "3 and 4 were replayed");
        assert_eq!(released.last_id, None);
        // 5 was committed before its live delivery: the replay sent it, so it is skipped.
        hub.deliver(&[message(&room, 5)]);
        hub.deliver(&[message(&room, 5), message(&room, 6)]);
        hub.deliver(&[message(&room, 7)]);
        assert_eq!(ids(&take(&member).await.unwrap()), [6, 7]);
    }

    #[tokio::test]
    async fn released_frames_past_the_replay_are_kept_and_not_sent_twice() {
        let hub = hub(16);
        let room = RoomName::parse("a").unwrap();
        let member = hub.join(&room, resuming());
        hub.deliver(&[message(&room, 4), message(&room, 5), message(&room, 6)]);
        let released = member.release(4);
        assert_eq!(released.frames.len(), 2);
        assert_eq!(released.last_id, Some(6));
        hub.deliver(&[message(&room, 6), message(&room, 7)]);
        assert_eq!(ids(&take(&member).await.unwrap()), [7]);
    }

    #[tokio::test]
    async fn a_reset_of_the_rooms_numbering_ends_the_skip() {
        let hub = hub(16);
        let room = RoomName::parse("a").unwrap();
        let member = hub.join(&room, resuming());
        let _ = member.release(50);
        let reset = serde_json::json!({ "event": "reset" });
        hub.announce(&room, Audience::Resuming, OutgoingFrame::json(&reset));
        // The new numbering starts again below the replayed id: its messages are all new.
        hub.deliver(&[message(&room, 1)]);
        let frames = take(&member).await.unwrap();
        assert_eq!(frames.len(), 2, "the reset, then message 1");
        assert_eq!(ids(&frames.range(1..).cloned().collect()), [1]);
    }

    #[tokio::test]
    async fn a_held_member_keeps_events_and_is_bounded_like_its_queue() {
        let hub = hub(3);
        let room = RoomName::parse("a").unwrap();
        let member = hub.join(&room, resuming());
        let event = serde_json::json!({ "event": "reset" });
        hub.deliver(&[message(&room, 1)]);
        hub.announce(&room, Audience::Resuming, OutgoingFrame::json(&event));
        hub.deliver(&[message(&room, 2)]);
        let released = member.release(2);
        assert_eq!(
            released.frames.len(),
            1,
            "the event, whatever the replay sent"
        );
        assert_eq!(released.last_id, None);

        let over = hub.join(&room, resuming());
        hub.deliver(&[message(&room, 3), message(&room, 4), message(&room, 5)]);
        hub.deliver(&[message(&room, 6)]);
        assert_eq!(take(&over).await, Err(Closed::SlowConsumer));
    }

    #[tokio::test]
    async fn a_batch_of_several_rooms_keeps_each_rooms_order() {
        let hub = hub(8);
        let a = RoomName::parse("a").unwrap();
        let b = RoomName::parse("b").unwrap();
        let (in_a, in_b) = (
            hub.join(&a, JoinAs::default()),
            hub.join(&b, JoinAs::default()),
        );
        hub.deliver(&[
            message(&b, 1),
            message(&a, 1),
            message(&b, 2),
            message(&a, 2),
        ]);
        assert_eq!(
            take(&in_a).await.unwrap(),
            [&b"{\"message\":1}"[..], b"{\"message\":2}"]
        );
        assert_eq!(
            take(&in_b).await.unwrap(),
            [&b"{\"message\":1}"[..], b"{\"message\":2}"]
        );
    }

    #[tokio::test]
    async fn evicts_a_slow_consumer_and_keeps_the_others() {
        let hub = hub(2);
        let room = RoomName::parse("r").unwrap();
        let slow = hub.join(&room, JoinAs::default());
        let fast = hub.join(&room, JoinAs::default());
        hub.deliver(&[message(&room, 1), message(&room, 2)]);
        assert_eq!(take(&fast).await.unwrap().len(), 2, "one batch, one take");
        hub.deliver(&[message(&room, 3)]);
        assert_eq!(take(&fast).await.unwrap().len(), 1);
        assert_eq!(take(&slow).await, Err(Closed::SlowConsumer));
        let rooms = hub.shard(&room);
        assert_eq!(rooms[&room].members.len(), 1);
    }

    #[tokio::test]
    async fn close_all_reaches_members_and_later_joiners() {
        let hub = hub(2);
        let room = RoomName::parse("r").unwrap();
        let before = hub.join(&room, JoinAs::default());
        hub.close_all();
        let after = hub.join(&room, JoinAs::default());
        assert_eq!(take(&before).await, Err(Closed::ShuttingDown));
        assert_eq!(take(&after).await, Err(Closed::ShuttingDown));
    }

    #[tokio::test]
    async fn members_with_deflate_share_one_compressed_frame() {
        let hub = hub(8);
        let room = RoomName::parse("r").unwrap();
        let deflate = || JoinAs {
            deflate_window: Some(15),
            ..JoinAs::default()
        };
        let (first, second) = (hub.join(&room, deflate()), hub.join(&room, deflate()));
        let plain = hub.join(&room, JoinAs::default());
        let mut long = message(&room, 1);
        long.message = RawValue::from_string(format!("\"{}\"", "chat ".repeat(100))).unwrap();
        hub.deliver(&[long, message(&room, 2)]);
        let taken = |subscription: &Subscription| {
            let mut frames = VecDeque::new();
            let waker = std::task::Waker::noop();
            let mut cx = std::task::Context::from_waker(waker);
            let _ = subscription.outbound.poll_take(&mut cx, Some(&mut frames));
            frames
        };
        let (first, second, plain) = (taken(&first), taken(&second), taken(&plain));
        assert_eq!(first[0][0], 0xC1, "FIN, RSV1, text");
        assert_eq!(first[0].as_ptr(), second[0].as_ptr(), "the same bytes");
        assert_eq!(plain[0][0], 0x81, "plain members get the plain frame");
        assert!(first[0].len() < plain[0].len());
        // Under the minimum size: the plain frame itself, for everyone.
        assert_eq!(first[1].as_ptr(), plain[1].as_ptr());
    }

    /// Queued frames, with their WebSocket header, without waiting.
    fn queued(subscription: &Subscription) -> VecDeque<Bytes> {
        let mut frames = VecDeque::new();
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let _ = subscription.outbound.poll_take(&mut cx, Some(&mut frames));
        frames
    }

    #[tokio::test]
    async fn large_frames_compressed_before_the_lock_reach_members_that_joined_meanwhile_in_order()
    {
        let compressed = Arc::new(AtomicU64::new(0));
        let hub = counting_compressions(8, metrics::Counter::from_arc(compressed.clone()));
        let room = RoomName::parse("r").unwrap();
        let window = |bits| JoinAs {
            deflate_window: Some(bits),
            ..JoinAs::default()
        };
        let early = hub.join(&room, window(15));
        let long = |id| {
            let mut long = message(&room, id);
            let text = "chat ".repeat(COMPRESS_BEFORE_LOCK_BYTES / 5);
            long.message = RawValue::from_string(format!("\"{text}\"")).unwrap();
            long
        };
        let first = [long(1), message(&room, 2)];
        let batch: Vec<&StoredMessage> = first.iter().collect();
        let prepared = hub
            .prepare(&room, &batch)
            .expect("a large frame to compress");
        assert_eq!(
            compressed.load(Ordering::Relaxed),
            1,
            "compressed before the push"
        );
        // Between the compression and the push: a member with another window, one with
        // metadata; a later delivery waits for this one (one caller at a time).
        let other_window = hub.join(&room, window(9));
        let meta = hub.join(
            &room,
            JoinAs {
                meta: true,
                meta_frames: true,
                deflate_window: Some(15),
                ..JoinAs::default()
            },
        );
        hub.push_to_room(&room, &batch, Some(prepared));
        // The joiners' (shape, window) pairs, compressed under the lock.
        assert_eq!(compressed.load(Ordering::Relaxed), 3);
        hub.deliver(&[long(3)]);

        let (early, other_window, meta) = (queued(&early), queued(&other_window), queued(&meta));
        for frames in [&early, &other_window, &meta] {
            assert_eq!(frames.len(), 3, "every message, once");
            assert_eq!(frames[0][0], 0xC1, "FIN, RSV1, text: compressed");
            assert_eq!(frames[1][0], 0x81, "under the minimum size: plain");
            assert_eq!(frames[2][0], 0xC1);
        }
        let inflate = |frame: &Bytes| {
            assert!(frame[1] < 126, "a short frame: its payload after two bytes");
            deflate::inflate(&frame[2..], 1 << 20).unwrap()
        };
        assert_ne!(early[0], other_window[0], "each window its own compression");
        for frames in [&early, &other_window] {
            assert_eq!(
                inflate(&frames[0]),
                format!(
                    "{{\"message\":\"{}\"}}",
                    "chat ".repeat(COMPRESS_BEFORE_LOCK_BYTES / 5)
                )
                .as_bytes()
            );
            assert_eq!(&frames[1][2..], br#"{"message":2}"#, "in order");
        }
        let with_meta = inflate(&meta[0]);
        assert!(
            with_meta.starts_with(br#"{"id":1,"room":"r""#),
            "with metadata, in order"
        );
    }

    #[test]
    fn the_last_member_leaving_removes_the_room() {
        let hub = hub(2);
        let room = RoomName::parse("r").unwrap();
        let subscription = hub.join(
            &room,
            JoinAs {
                meta: true,
                meta_frames: true,
                ..JoinAs::default()
            },
        );
        drop(subscription);
        assert!(hub.shard(&room).get(&room).is_none());
    }
}
