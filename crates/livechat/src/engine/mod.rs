//! Engines: how an accepted message is stored, given its place in its room's order, and handed
//! to the hub of every node that has members in the room.
//!
//! Data flows one way: transport -> `Engine::publish` -> store -> `Hub::deliver` -> sockets.
//! `embedded` serves one node from a local history store; `redis` shares rooms, order and history
//! between every node on the same Redis (or Redis Cluster).

mod embedded;
mod queue;
mod redis;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use tokio::sync::oneshot;

pub use embedded::EmbeddedEngine;
pub use redis::{RedisEngine, RedisSettings, RoomCommands, RoomRegistry, migrate};

use serde::Serialize;

use crate::change::{Change, ChangeRefused, Changed};
use crate::control::Control;
use crate::control::ModerationNews;
use crate::epoch::Epoch;
use crate::message::{Author, Draft, StoredMessage};
use crate::moderation::Ban;
use crate::presence::PresenceList;
use crate::room::RoomName;
use crate::store::{
    Authored, HistoryQuery, Page, Place, ReadPosition, RecentRoom, Refused, RoomStats,
};
use crate::webhooks::Outbox;

pub trait Engine: Send + Sync + 'static {
    /// Queues a message. Messages get ids (and reach subscribers) in the order of the calls, so a
    /// connection can publish again before the previous message is stored. The receipt resolves
    /// once the message is stored and handed to the hub.
    fn publish(&self, draft: Draft) -> Receipt;

    /// Makes a change to a stored message (edit, delete, reaction), in order with the room's
    /// publishes; the receipt resolves once it is stored and its event handed to every node's
    /// hub (or with why it was refused).
    fn change(&self, change: Change) -> ChangeReceipt;

    /// The messages of `room` up to id `through` changed since `through` was its last id, as they
    /// are now, in the order of their changes: what a client resuming after `through` missed of
    /// them (at most `limit`).
    fn changed_since(
        &self,
        room: &RoomName,
        through: u64,
        reader: Option<String>,
        limit: usize,
    ) -> BoxFuture<'static, Result<Vec<StoredMessage>, EngineError>>;

    /// Carries `command` out on every node, this one included.
    fn control(&self, command: Control) -> BoxFuture<'static, Result<(), EngineError>>;

    /// Moves `user`'s read position in `room` forward to `id` (never back): the position now.
    fn mark_read(
        &self,
        user: &str,
        room: &RoomName,
        id: u64,
    ) -> BoxFuture<'static, Result<u64, EngineError>>;

    /// Every room `user` has a read position in, with the room's last id.
    fn read_positions(
        &self,
        user: &str,
    ) -> BoxFuture<'static, Result<Vec<ReadPosition>, EngineError>>;

    /// Bans and mutes as stored (`crate::moderation`), those past their end included until
    /// forgotten.
    fn bans(&self) -> BoxFuture<'static, Result<Vec<Ban>, EngineError>>;
    fn put_ban(&self, ban: Ban) -> BoxFuture<'static, Result<(), EngineError>>;
    /// Whether there was such a ban.
    fn remove_ban(&self, id: &str) -> BoxFuture<'static, Result<bool, EngineError>>;

    /// Notes a direct-message room in both its users' lists.
    fn open_direct(&self, room: &RoomName) -> BoxFuture<'static, Result<(), EngineError>>;

    /// The direct-message rooms in `user`'s list, the latest opened first.
    fn directs(&self, user: &str) -> BoxFuture<'static, Result<Vec<RoomName>, EngineError>>;

    /// What is stored of a room: messages, their bytes, its last id and epoch.
    fn room_stats(
        &self,
        room: &RoomName,
    ) -> BoxFuture<'static, Result<(RoomStats, Epoch), EngineError>>;

    /// Messages of `user` among the next `limit` stored after `from` (room, then id order).
    fn authored(
        &self,
        user: &str,
        from: Option<Place>,
        limit: usize,
    ) -> BoxFuture<'static, Result<Authored, EngineError>>;

    /// One page of a room's stored history, oldest first, cut at the query's byte cap, with the
    /// room's last id and epoch.
    fn history(&self, query: HistoryQuery) -> BoxFuture<'static, Result<Page, EngineError>>;

    /// Resolves once messages published to `room` from now on reach this node's hub. A WebSocket
    /// joins its room and waits for this before the handshake is answered, so that it misses
    /// nothing published after it connected.
    fn room_ready(&self, room: &RoomName) -> BoxFuture<'static, Result<(), EngineError>>;

    /// Rooms with members on any node, with their member counts summed over nodes.
    fn rooms(&self) -> BoxFuture<'static, Result<Vec<RoomCount>, EngineError>>;

    /// Up to `limit` rooms with stored messages, the latest written first.
    fn recent_rooms(
        &self,
        limit: usize,
    ) -> BoxFuture<'static, Result<Vec<RecentRoom>, EngineError>>;

    /// Who is in `room`, on every node.
    fn presence(&self, room: &RoomName) -> BoxFuture<'static, Result<PresenceList, EngineError>>;

    /// Tells the members of `room` with presence on, on every node, that `user` is typing.
    fn typing(&self, room: &RoomName, user: Arc<Author>);

    /// Whether publishes can be stored right now; the reason when not.
    fn readiness(&self) -> Result<(), EngineError>;

    /// Where webhook events wait for the app, when they are recorded.
    fn outbox(&self) -> Option<Arc<dyn Outbox>>;

    /// Who hears of moderation commands from any node (the server's moderation: it reads the
    /// bans again, forgets what admitted a disconnected user); set once.
    fn set_moderation(&self, moderation: Arc<dyn ModerationNews>);

    /// Who is told of each message this node's publishes store, those from the Django Channels
    /// layer excepted (the bridge, which passes them on to the layer); set once.
    fn observe_stored(&self, observer: Arc<dyn StoredObserver>);

    /// Stores everything already accepted, then stops; later publishes fail with `Stopped`.
    fn shutdown(&self) -> BoxFuture<'static, ()>;
}

/// Told of messages as they are stored (`Engine::observe_stored`); called on the engine's writer,
/// so it must not wait.
pub trait StoredObserver: Send + Sync + 'static {
    fn stored(&self, message: &StoredMessage);
}

/// Where an engine's writer finds its `StoredObserver`, once the server has set it.
pub type ObserverSlot = Arc<std::sync::OnceLock<Arc<dyn StoredObserver>>>;

/// Where a published message ended up.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub id: u64,
    pub ts: u64,
    /// The room's epoch: `id` counts in it.
    pub epoch: Epoch,
    /// Its nonce was seen in the dedupe window: the message first stored with it (neither
    /// stored nor delivered again).
    pub original: Option<Box<StoredMessage>>,
}

impl Accepted {
    /// A message stored now, as `id` at `ts`.
    pub fn new(id: u64, ts: u64, epoch: Epoch) -> Self {
        Self {
            id,
            ts,
            epoch,
            original: None,
        }
    }

    pub fn duplicate(original: StoredMessage, epoch: Epoch) -> Self {
        Self {
            id: original.id,
            ts: original.ts,
            epoch,
            original: Some(Box::new(original)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RoomCount {
    #[schema(value_type = String)]
    pub room: RoomName,
    pub members: u64,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("message store unavailable: {0}")]
    Unavailable(String),
    #[error("server is shutting down")]
    Stopped,
    #[error("server overloaded: too many messages waiting to be stored; try again shortly")]
    Overloaded,
    /// The disk holding the embedded history is full: nothing is stored until space is freed.
    #[error("storage full")]
    StorageFull,
    /// The publish itself cannot be stored (a reply to no message).
    #[error(transparent)]
    Refused(#[from] Refused),
    /// A value of the server's own could not be written as JSON (a bug; logged and counted).
    #[error(transparent)]
    Unencodable(#[from] crate::json::Unencodable),
}

impl EngineError {
    /// How metrics name this refusal.
    pub fn metric(&self) -> crate::metrics::PublishError {
        use crate::metrics::PublishError;
        match self {
            Self::Unavailable(_) => PublishError::StoreUnavailable,
            Self::Stopped => PublishError::ShuttingDown,
            Self::Overloaded => PublishError::Overloaded,
            Self::StorageFull => PublishError::StorageFull,
            Self::Refused(_) => PublishError::Invalid,
            Self::Unencodable(_) => PublishError::Unencodable,
        }
    }
}

/// Resolves when a published message (or a change) has been stored, or could not be.
pub struct Receipt<T = Accepted>(oneshot::Receiver<Result<T, EngineError>>);

/// What became of a change: made, or refused with the asker's reason.
pub type ChangeReceipt = Receipt<Result<Changed, ChangeRefused>>;

impl<T> Receipt<T> {
    pub fn channel() -> (oneshot::Sender<Result<T, EngineError>>, Self) {
        let (sender, receiver) = oneshot::channel();
        (sender, Self(receiver))
    }
}

impl<T> Future for Receipt<T> {
    type Output = Result<T, EngineError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|result| result.unwrap_or(Err(EngineError::Stopped)))
    }
}
