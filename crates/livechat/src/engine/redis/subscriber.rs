//! Subscriptions: this node subscribes to a room's channel while the room has local members, and
//! hands what arrives to the hub in id order. Rooms opened together (a burst of new rooms) are
//! subscribed together: one SUBSCRIBE for all, their numbering, members and missed messages read
//! with all requests in flight at once, so that delivery elsewhere waits a few round trips, not
//! a few per room. Each room remembers the last id it delivered and
//! its epoch, so a message seen twice is dropped, a jump in ids (missed while subscribing, or
//! while the connection was down) is filled from the room's stream first, and a new epoch (Redis
//! lost the room's keys: ids start again) is followed and announced: nothing is lost silently.
//! Presence and typing events on the channel go to the roster (see `presence`).
//!
//! A disconnection notice (the connection was lost, or replaced by a new one) makes the node
//! catch every room up once Redis answers. One heal can bring several notices (a stalled link
//! is replaced again each time a command times out, and the notices wait in the queue while a
//! catch-up waits for Redis): a notice sent before a complete catch-up began is covered by it
//! and ignored, so each heal is caught up (and logged) once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, join_all, try_join_all};
use redis::{PushInfo, PushKind, Value};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::Health;
use super::connection::{Connection, PushQueue, Pushed};
use super::keys::Keys;
use super::nodes::live_nodes;
use super::presence::{self, ChannelEvent};
use super::stream;
use crate::control::{Control, ModerationNews};
use crate::engine::EngineError;
use crate::epoch::Epoch;
use crate::hub::{Audience, Hub, RoomObserver};
use crate::message::{Author, Event, Extra, Nonce, StoredMessage};
use crate::presence::{Applied, Roster, deliver_typing};
use crate::room::RoomName;

/// Room commands carried out together.
const COMMAND_BATCH: usize = 512;
/// Pushes taken in one turn, their messages delivered together.
const PUSH_BATCH: usize = 512;
/// Missed messages are read from a room's stream this many at a time (after a reconnect or for
/// a burst of new rooms, this many over all the rooms read together).
const CATCH_UP_PAGE: usize = 1000;
/// Rooms caught up together after a reconnect (their requests in flight at once).
const CATCH_UP_ROOMS: usize = 500;
/// How often a node retries catching up after its connection came back.
const RESYNC_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Subscription {
    Pending,
    Active,
    Failed(String),
}

enum Command {
    Subscribe(RoomName, watch::Sender<Subscription>),
    Unsubscribe(RoomName),
}

/// The registry's commands, for the subscriber task of the engine.
pub struct RoomCommands(mpsc::UnboundedReceiver<Command>);

/// The hub's observer: turns rooms opening and closing into subscribe and unsubscribe commands,
/// and lets a joining connection wait until its room's subscription is active.
pub struct RoomRegistry {
    commands: mpsc::UnboundedSender<Command>,
    states: Mutex<HashMap<RoomName, watch::Receiver<Subscription>>>,
    timeout: Duration,
}

impl RoomRegistry {
    pub fn new(timeout: Duration) -> (Arc<Self>, RoomCommands) {
        let (commands, receiver) = mpsc::unbounded_channel();
        let registry = Arc::new(Self {
            commands,
            states: Mutex::default(),
            timeout,
        });
        (registry, RoomCommands(receiver))
    }

    fn states(&self) -> MutexGuard<'_, HashMap<RoomName, watch::Receiver<Subscription>>> {
        self.states
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn ready(&self, room: &RoomName) -> BoxFuture<'static, Result<(), EngineError>> {
        let state = self.states().get(room).cloned();
        let timeout = self.timeout;
        async move {
            let Some(mut state) = state else {
                return Err(EngineError::Unavailable(
                    "room subscription was dropped".into(),
                ));
            };
            let settled = tokio::time::timeout(
                timeout,
                state.wait_for(|state| *state != Subscription::Pending),
            )
            .await;
            match settled
                .as_ref()
                .map(|state| state.as_ref().map(|s| (**s).clone()))
            {
                Ok(Ok(Subscription::Active)) => Ok(()),
                Ok(Ok(Subscription::Failed(reason))) => Err(EngineError::Unavailable(reason)),
                Ok(_) => Err(EngineError::Stopped),
                Err(_) => Err(EngineError::Unavailable(
                    "Redis subscription timed out".into(),
                )),
            }
        }
        .boxed()
    }
}

impl RoomObserver for RoomRegistry {
    fn room_opened(&self, room: &RoomName) {
        let (state, receiver) = watch::channel(Subscription::Pending);
        self.states().insert(room.clone(), receiver);
        let _ = self.commands.send(Command::Subscribe(room.clone(), state));
    }

    fn room_closed(&self, room: &RoomName) {
        self.states().remove(room);
        let _ = self.commands.send(Command::Unsubscribe(room.clone()));
    }
}

/// A published frame: `{"id":N,"ts":T,"epoch":E,"message":X}` (and `user`, `nonce`).
#[derive(Deserialize)]
struct Published {
    id: u64,
    ts: u64,
    message: Box<RawValue>,
    #[serde(default)]
    user: Option<Arc<Author>>,
    #[serde(default)]
    epoch: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    reply_to: Option<u64>,
}

/// Where a subscribed room's delivery stands.
pub struct Delivered {
    last: u64,
    epoch: Epoch,
    /// The epoch this node replaced with `epoch` (Redis lost acknowledged messages): frames still
    /// in flight with it are not a new numbering.
    retired: Option<Epoch>,
}

pub struct Subscriber {
    pub connection: Connection,
    pub keys: Keys,
    pub hub: Arc<Hub>,
    pub roster: Arc<Roster>,
    pub health: Arc<Health>,
    /// A room's keys expire after this long without a message (zero: never).
    pub room_ttl: Duration,
    /// Per subscribed room.
    pub delivered: HashMap<RoomName, Delivered>,
    /// This node's name, and who hears of moderation commands on the control channel.
    pub node: String,
    pub moderation: Arc<OnceLock<Arc<dyn ModerationNews>>>,
    /// Messages received in this turn, delivered together at its end (`flush`), or before
    /// anything else is sent to a room's members, so that they keep their order.
    pub pending: Vec<StoredMessage>,
}

impl Subscriber {
    pub async fn run(
        mut self,
        RoomCommands(mut commands): RoomCommands,
        pushed: Pushed,
        stop: CancellationToken,
    ) {
        let Pushed {
            queue: mut pushes,
            overflowed,
            notices,
        } = pushed;
        let mut resync = tokio::time::interval(RESYNC_EVERY);
        let mut behind = false;
        // Disconnection notices up to this number came before the last complete catch-up.
        let mut covered = 0;
        // Commands for every node, for as long as this one runs (resubscribed with the rest).
        if let Err(error) = self.connection.subscribe(&[self.keys.control()]).await {
            tracing::warn!(%error, "cannot subscribe to the control channel yet");
            self.health.failed(&error);
        }
        loop {
            // Pushes were dropped: what they carried is read from the streams.
            if overflowed.swap(false, Ordering::AcqRel) {
                tracing::warn!(
                    "Redis pushes came faster than this node took them; catching up from the streams"
                );
                behind = !self.catch_up_all(&notices, &mut covered).await;
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                Some(command) = commands.recv() => {
                    let mut batch = vec![command];
                    while batch.len() < COMMAND_BATCH {
                        match commands.try_recv() {
                            Ok(command) => batch.push(command),
                            Err(_) => break,
                        }
                    }
                    self.carry_out(batch).await;
                }
                Some(push) = pushes.recv() => {
                    // The pushes already waiting behind it are taken in the same turn (up to
                    // `PUSH_BATCH`), and their messages delivered together below: a member gets
                    // them in one write, not one write per message.
                    let mut next = Some(push);
                    let mut taken = 0;
                    while let Some(push) = next.take() {
                        if self.take_push(push, covered).await {
                            behind = true;
                        }
                        taken += 1;
                        if taken < PUSH_BATCH {
                            next = pushes.try_recv().ok();
                        }
                    }
                }
                _ = resync.tick(), if behind => {
                    behind = !self.catch_up_all(&notices, &mut covered).await;
                }
            }
            self.flush();
        }
    }

    /// Acts on one push; true when it says this node missed some and must catch up.
    async fn take_push(&mut self, push: PushInfo, covered: u64) -> bool {
        match push.kind {
            PushKind::Message | PushKind::SMessage => self.receive(push.data).await,
            PushKind::Disconnection => {
                let notice = PushQueue::notice_number(&push);
                if notice.is_some_and(|notice| notice <= covered) {
                    tracing::debug!(
                        notice,
                        "Redis disconnection notice: covered by the catch-up after it"
                    );
                } else {
                    tracing::debug!(
                        notice,
                        "Redis disconnection notice: catching up once Redis answers"
                    );
                    self.health.disconnected();
                    return true;
                }
            }
            _ => {}
        }
        false
    }

    /// Hands the messages gathered so far to the hub, room by room in the order received.
    fn flush(&mut self) {
        if !self.pending.is_empty() {
            self.hub.deliver(&self.pending);
            self.pending.clear();
        }
    }

    /// Commands in order; consecutive subscriptions go together.
    async fn carry_out(&mut self, commands: Vec<Command>) {
        let mut opening = Vec::new();
        for command in commands {
            match command {
                Command::Subscribe(room, state) => opening.push((room, state)),
                Command::Unsubscribe(room) => {
                    self.subscribe(std::mem::take(&mut opening)).await;
                    self.unsubscribe(room).await;
                }
            }
        }
        self.subscribe(opening).await;
    }

    /// Subscribes, then delivers whatever was stored since each room opened here: the last id
    /// is read before subscribing, so a message published in between is fetched, not lost (see
    /// `read_behind`: at most `CATCH_UP_PAGE` entries at a time over all the rooms). The other
    /// nodes' members are read after subscribing, so no change of theirs is missed. Each room's
    /// subscription is active once every room of the burst is read.
    async fn subscribe(&mut self, rooms: Vec<(RoomName, watch::Sender<Subscription>)>) {
        if rooms.is_empty() {
            return;
        }
        let names: Vec<RoomName> = rooms.iter().map(|(room, _)| room.clone()).collect();
        let numberings = match self.open(&names).await {
            Ok(numberings) => numberings,
            Err(error) => {
                self.health.failed(&error);
                for (_, state) in rooms {
                    let _ = state.send(Subscription::Failed(format!("Redis: {error}")));
                }
                return;
            }
        };
        for (room, (epoch, last)) in names.iter().zip(numberings) {
            let delivered = Delivered {
                last,
                epoch,
                retired: None,
            };
            self.delivered.insert(room.clone(), delivered);
        }
        // What was published while subscribing (usually nothing), every room read at once in
        // rounds of at most `CATCH_UP_PAGE` entries over all of them.
        let behind = names.into_iter().map(|room| (room, None)).collect();
        self.read_behind(behind).await;
        for (_, state) in rooms {
            let _ = state.send(Subscription::Active);
        }
    }

    /// Numbers, subscribes and reads the members of `rooms`, every request in flight at once.
    async fn open(&mut self, rooms: &[RoomName]) -> redis::RedisResult<Vec<(Epoch, u64)>> {
        let room_ttl = self.room_ttl;
        let numberings = try_join_all(rooms.iter().map(|room| {
            let mut connection = self.connection.clone();
            let keys = &self.keys;
            async move { stream::numbering(&mut connection, keys, room, room_ttl).await }
        }))
        .await?;
        let channels: Vec<String> = rooms.iter().map(|room| self.keys.channel(room)).collect();
        self.connection.subscribe(&channels).await?;
        let nodes = live_nodes(&mut self.connection, &self.keys).await?;
        let members = try_join_all(rooms.iter().map(|room| {
            let mut connection = self.connection.clone();
            let (keys, nodes) = (&self.keys, &nodes);
            async move { presence::read_nodes(&mut connection, keys, room, nodes).await }
        }))
        .await?;
        for (room, views) in rooms.iter().zip(members) {
            for (node, view) in views {
                self.roster.replace_node(room, &node, view, false);
            }
            self.roster.opened(room);
        }
        Ok(numberings)
    }

    async fn unsubscribe(&mut self, room: RoomName) {
        self.delivered.remove(&room);
        if let Err(error) = self.connection.unsubscribe(&self.keys.channel(&room)).await {
            tracing::debug!(%room, %error, "unsubscribe failed");
        }
    }

    async fn receive(&mut self, data: Vec<Value>) {
        let [channel, payload] = data.as_slice() else {
            return;
        };
        let (Ok(channel), Ok(payload)) = (
            redis::from_redis_value_ref::<String>(channel),
            redis::from_redis_value_ref::<Vec<u8>>(payload),
        ) else {
            return;
        };
        if channel == self.keys.control() {
            match serde_json::from_slice::<Control>(&payload) {
                Ok(command) => command.apply(&self.hub, &self.node, self.moderation.get()),
                Err(error) => tracing::warn!(%error, "undecodable command on the control channel"),
            }
            return;
        }
        let Some(room) = self.keys.room_of_channel(&channel) else {
            return;
        };
        if ChannelEvent::is_change(&payload) {
            // Made by a change script: members with metadata are told as it was written.
            let frame = crate::outgoing::OutgoingFrame::raw_json_parts(&[&payload]);
            self.flush();
            return self.hub.announce(&room, Audience::Meta, frame);
        }
        if ChannelEvent::is_event(&payload) {
            return self.receive_event(room, &payload).await;
        }
        let Ok(published) = serde_json::from_slice::<Published>(&payload) else {
            tracing::warn!(%room, "undecodable message on the room channel");
            return;
        };
        let Some(delivered) = self.delivered.get(&room) else {
            return; // Unsubscribed meanwhile.
        };
        let mut last = delivered.last;
        if let Some(epoch) = published.epoch
            && *epoch != *delivered.epoch
            && delivered.retired.as_deref() != Some(epoch.as_str())
        {
            match self.follow_epoch(&room, Epoch::from(epoch)).await {
                Some(kept) => last = kept,
                None => return, // Redis unusable: caught up once it is back.
            }
        }
        if published.id <= last {
            return;
        }
        if published.id > last + 1 {
            self.catch_up(&room, Some(published.id)).await;
        }
        self.deliver(StoredMessage {
            id: published.id,
            room,
            message: published.message,
            ts: published.ts,
            user: published.user,
            nonce: published.nonce.and_then(|nonce| Nonce::parse(&nonce).ok()),
            extra: Extra::replying(published.reply_to),
        });
    }

    /// A presence change of another node, or a typing user.
    async fn receive_event(&mut self, room: RoomName, payload: &[u8]) {
        self.flush();
        let event = match serde_json::from_slice::<ChannelEvent>(payload) {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(%room, %error, "undecodable event on the room channel");
                return;
            }
        };
        match event {
            ChannelEvent::Typing { user } => deliver_typing(&self.roster, &self.hub, &room, &user),
            ChannelEvent::Presence {
                node,
                seq,
                members,
                full,
                users,
            } => {
                let change = ChannelEvent::change(seq, members, full, users);
                if self.roster.apply(&room, &node, change) == Applied::Missed {
                    self.reread_node(&room, &node).await;
                }
            }
        }
    }

    async fn reread_node(&mut self, room: &RoomName, node: &str) {
        match presence::read_node(&mut self.connection, &self.keys, room, node).await {
            Ok(view) => self.roster.replace_node(room, node, view, true),
            Err(error) => {
                tracing::warn!(%room, node, %error, "cannot read a node's members");
                self.health.failed(&error);
            }
        }
    }

    /// After a reconnect, given the room's numbering as Redis has it now: whether it is still the
    /// one delivered. Another epoch is followed; the same epoch with fewer messages than were
    /// delivered (Redis lost some it had acknowledged: the same ids would be given to other
    /// messages) gets a new epoch, the same on every node. False when Redis could not say.
    async fn settle_numbering(&mut self, room: &RoomName, epoch: Epoch, stored: u64) -> bool {
        let Some(delivered) = self.delivered.get(room) else {
            return true;
        };
        if *epoch != *delivered.epoch {
            return self.follow_epoch(room, epoch).await.is_some();
        }
        if stored >= delivered.last {
            return true;
        }
        let renewed = stream::renew_epoch(
            &mut self.connection,
            &self.keys,
            room,
            &epoch,
            self.room_ttl,
            stored,
        )
        .await;
        match renewed {
            Ok(renewed) => {
                self.reset(room, renewed, stored, Some(epoch));
                true
            }
            Err(error) => {
                self.health.failed(&error);
                false
            }
        }
    }

    /// The room is in another epoch: renewed from ours by a node that found acknowledged
    /// messages lost (ids go on after the last one kept), or new because its keys were lost (ids
    /// start again). Returns where delivery goes on; `None` when Redis could not say.
    async fn follow_epoch(&mut self, room: &RoomName, epoch: Epoch) -> Option<u64> {
        let old = self.delivered.get(room)?.epoch.clone();
        match stream::renewed_from(&mut self.connection, &self.keys, room, &old).await {
            Ok(Some(kept)) => {
                let last = self.delivered.get(room).map_or(kept, |d| d.last.min(kept));
                self.reset(room, epoch, last, Some(old));
                Some(last)
            }
            Ok(None) => {
                self.reset(room, epoch, 0, None);
                Some(0)
            }
            Err(error) => {
                self.health.failed(&error);
                None
            }
        }
    }

    /// The room's numbering is now `epoch`, its ids going on after `last`: its members that
    /// follow events are told, and delivery follows the new ids.
    fn reset(&mut self, room: &RoomName, epoch: Epoch, last: u64, retired: Option<Epoch>) {
        tracing::warn!(%room, %epoch, last,
            "Redis lost messages of this room (no persistence, an older snapshot, or a failover); new epoch");
        let event = Event::Reset {
            room,
            last,
            epoch: &epoch,
        };
        self.flush();
        self.hub.announce(room, Audience::Resuming, event.frame());
        let delivered = Delivered {
            last,
            epoch,
            retired,
        };
        self.delivered.insert(room.clone(), delivered);
    }

    /// Delivers stored messages after the last delivered one (and before `until`).
    /// Returns false when the stream could not be read.
    async fn catch_up(&mut self, room: &RoomName, until: Option<u64>) -> bool {
        let Some(&Delivered { last, .. }) = self.delivered.get(room) else {
            return true;
        };
        let mut after = last;
        loop {
            let read = stream::range(
                &mut self.connection,
                &self.keys,
                room,
                after,
                until,
                CATCH_UP_PAGE,
            )
            .await;
            let page = match read {
                Ok(page) => page,
                Err(error) => {
                    tracing::warn!(%room, %error, "cannot read missed messages");
                    self.health.failed(&error);
                    return false;
                }
            };
            if let (Some(first), Some(until)) = (page.first(), until)
                && after == last
                && first.id > last + 1
            {
                tracing::warn!(%room, from = last + 1, to = until - 1, "messages already past retention");
            }
            let full = page.len() == CATCH_UP_PAGE;
            for message in page {
                after = message.id;
                self.deliver(message);
            }
            if !full {
                return true;
            }
        }
    }

    /// After a reconnect: every room catches up with its stream, `CATCH_UP_ROOMS` rooms at a
    /// time with their requests in flight at once (see `catch_up_rooms`). A new epoch (or, for a
    /// room numbered before epochs, a last id below what was delivered) means Redis lost the
    /// room's data and numbers from 1 again; the room follows the new numbering instead of
    /// dropping it as duplicates. Once complete, `covered` is the number of the last
    /// disconnection notice sent before it began (see `notices`).
    async fn catch_up_all(&mut self, notices: &AtomicU64, covered: &mut u64) -> bool {
        // Without any room to read, only a command tells whether Redis is back.
        let ping: redis::RedisResult<String> =
            redis::cmd("PING").query_async(&mut self.connection).await;
        if let Err(error) = ping {
            self.health.failed(&error);
            return false;
        }
        // Read once Redis answered, before anything is subscribed or read: a notice counted by
        // now was about a connection replaced (or lost) before then, so what follows covers it.
        let covers = notices.load(Ordering::Acquire);
        // Logged: how long the catch-up took once Redis answered, in how many rounds of requests.
        let started = Instant::now();
        let rooms: Vec<RoomName> = self.delivered.keys().cloned().collect();
        // The same connection resubscribed by itself; a new one (to a new master after a
        // failover, or in place of one that stalled) has nothing, not even the control channel.
        let channels: Vec<String> = std::iter::once(self.keys.control())
            .chain(rooms.iter().map(|room| self.keys.channel(room)))
            .collect();
        if let Err(error) = self.connection.subscribe(&channels).await {
            self.health.failed(&error);
            return false;
        }
        let nodes = match live_nodes(&mut self.connection, &self.keys).await {
            Ok(nodes) => nodes,
            Err(error) => {
                self.health.failed(&error);
                return false;
            }
        };
        let (mut complete, mut rounds) = (true, 2);
        for chunk in rooms.chunks(CATCH_UP_ROOMS) {
            let (caught_up, chunk_rounds) = self.catch_up_rooms(chunk, &nodes).await;
            complete &= caught_up;
            rounds += chunk_rounds;
        }
        if complete {
            // Redis may have lost this node's part, or the other nodes missed its changes.
            self.roster.relay_everything();
            tracing::info!(
                rooms = self.delivered.len(),
                rounds,
                ms = started.elapsed().as_millis() as u64,
                "Redis connection back; subscriptions caught up"
            );
            self.health.reconnected();
            *covered = covers;
        }
        complete
    }

    /// Catches `rooms` up, their requests in flight at once (on a cluster each goes to its
    /// room's slot, as in the join burst): first every room's numbering and members, then what
    /// each missed (`read_behind`), each room's messages delivered in order. Whether every room
    /// caught up, and the rounds of requests it took.
    async fn catch_up_rooms(&mut self, rooms: &[RoomName], nodes: &[String]) -> (bool, usize) {
        let reads = join_all(rooms.iter().map(|room| {
            let (mut numbering, mut members) = (self.connection.clone(), self.connection.clone());
            let (keys, room_ttl) = (&self.keys, self.room_ttl);
            async move {
                futures_util::join!(
                    stream::numbering(&mut numbering, keys, room, room_ttl),
                    presence::read_nodes(&mut members, keys, room, nodes),
                )
            }
        }))
        .await;
        let (mut complete, rounds) = (true, 1);
        // The rooms that missed messages, and the last id stored in each.
        let mut behind = Vec::new();
        for (room, (numbering, members)) in rooms.iter().zip(reads) {
            match members {
                Ok(views) => {
                    for (node, view) in views {
                        self.roster.replace_node(room, &node, view, true);
                    }
                }
                Err(error) => {
                    self.health.failed(&error);
                    complete = false;
                }
            }
            let (epoch, stored) = match numbering {
                Ok(numbering) => numbering,
                Err(error) => {
                    self.health.failed(&error);
                    complete = false;
                    continue;
                }
            };
            if !self.settle_numbering(room, epoch, stored).await {
                complete = false;
                continue;
            }
            if self.delivered.get(room).is_some_and(|d| d.last < stored) {
                behind.push((room.clone(), Some(stored)));
            }
        }
        let (read, read_rounds) = self.read_behind(behind).await;
        (complete && read, rounds + read_rounds)
    }

    /// Delivers what `rooms` missed, each after its last delivered id (up to the last id stored,
    /// where known), every room's request in flight at once, in rounds that ask at most
    /// `CATCH_UP_PAGE` entries over all of them: what one round holds is bounded whatever the
    /// number of rooms. A room whose stored last id is known asks for what it lacks (the first
    /// ones first); the others share the round, and are done at a short page. Whether every
    /// room was read, and the rounds it took.
    async fn read_behind(&mut self, mut behind: Vec<(RoomName, Option<u64>)>) -> (bool, usize) {
        let (mut complete, mut rounds) = (true, 0);
        while !behind.is_empty() {
            rounds += 1;
            let asked = plan_round(&behind, &self.delivered);
            let pages =
                join_all(
                    asked.iter().map(|(room, after, count)| {
                        let mut connection = self.connection.clone();
                        let keys = &self.keys;
                        async move {
                            stream::range(&mut connection, keys, room, *after, None, *count).await
                        }
                    }),
                )
                .await;
            let mut done = Vec::new();
            for ((room, _, count), page) in asked.into_iter().zip(pages) {
                match page {
                    Ok(page) => {
                        // A short page: the stream holds nothing more for now (later messages
                        // come as pushes, on the subscription made before the numbering read).
                        if page.len() < count {
                            done.push(room.clone());
                        }
                        for message in page {
                            self.deliver(message);
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%room, %error, "cannot read missed messages");
                        self.health.failed(&error);
                        complete = false;
                        done.push(room);
                    }
                }
            }
            behind.retain(|(room, stored)| {
                !done.contains(room)
                    && self
                        .delivered
                        .get(room)
                        .is_some_and(|d| stored.is_none_or(|stored| d.last < stored))
            });
        }
        (complete, rounds)
    }

    fn deliver(&mut self, message: StoredMessage) {
        if let Some(Delivered { last, .. }) = self.delivered.get_mut(&message.room)
            && message.id > *last
        {
            *last = message.id;
            self.pending.push(message);
        }
    }
}

/// One round of `read_behind`: the rooms asked, each with the id it reads after and how many
/// entries it asks for, at most `CATCH_UP_PAGE` over all of them (one each at least: past that
/// many rooms, the rest wait for the next round).
fn plan_round(
    behind: &[(RoomName, Option<u64>)],
    delivered: &HashMap<RoomName, Delivered>,
) -> Vec<(RoomName, u64, usize)> {
    let share = (CATCH_UP_PAGE / behind.len().max(1)).max(1);
    let mut left = CATCH_UP_PAGE;
    let mut asked = Vec::new();
    for (room, stored) in behind {
        if left == 0 {
            break;
        }
        let Some(delivered) = delivered.get(room) else {
            continue; // Unsubscribed meanwhile.
        };
        let lacking = stored.map_or(share, |stored| {
            stored.saturating_sub(delivered.last) as usize
        });
        let count = lacking.clamp(1, left);
        left -= count;
        asked.push((room.clone(), delivered.last, count));
    }
    asked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rooms(n: usize, last: u64) -> HashMap<RoomName, Delivered> {
        (0..n)
            .map(|n| {
                let room = RoomName::parse(&format!("r{n}")).expect("a room name");
                let delivered = Delivered {
                    last,
                    epoch: Epoch::from("e"),
                    retired: None,
                };
                (room, delivered)
            })
            .collect()
    }

    fn asked_entries(asked: &[(RoomName, u64, usize)]) -> usize {
        asked.iter().map(|(_, _, count)| count).sum()
    }

    #[test]
    fn a_burst_of_new_rooms_asks_at_most_a_page_over_all_of_them() {
        for n in [1, 3, 512, 1000, 2500] {
            let delivered = rooms(n, 7);
            let behind: Vec<_> = delivered.keys().map(|room| (room.clone(), None)).collect();
            let asked = plan_round(&behind, &delivered);
            assert!(asked_entries(&asked) <= CATCH_UP_PAGE, "{n} rooms");
            assert_eq!(
                asked.len(),
                n.min(CATCH_UP_PAGE),
                "{n} rooms: each asked at once"
            );
            assert!(
                asked
                    .iter()
                    .all(|(_, after, count)| *after == 7 && *count >= 1)
            );
        }
        // A room alone reads a whole page.
        let delivered = rooms(1, 0);
        let behind: Vec<_> = delivered.keys().map(|room| (room.clone(), None)).collect();
        assert_eq!(
            asked_entries(&plan_round(&behind, &delivered)),
            CATCH_UP_PAGE
        );
    }

    #[test]
    fn rooms_that_know_what_they_lack_ask_for_it_within_a_page() {
        let delivered = rooms(3, 10);
        let mut behind: Vec<_> = delivered.keys().map(|room| (room.clone(), None)).collect();
        behind.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        behind[0].1 = Some(15);
        behind[1].1 = Some(10 + 2 * CATCH_UP_PAGE as u64);
        behind[2].1 = Some(12);
        let asked = plan_round(&behind, &delivered);
        let counts: Vec<usize> = asked.iter().map(|(_, _, count)| *count).collect();
        assert_eq!(
            counts,
            [5, CATCH_UP_PAGE - 5],
            "the third waits for the next round"
        );
    }
}
