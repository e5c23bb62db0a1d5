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
pub use redis::{RedisEngine, RedisSettings, RoomCommands, RoomRegistry};

use serde::Serialize;

use crate::epoch::Epoch;
use crate::message::{Author, Draft, StoredMessage};
use crate::presence::PresenceList;
use crate::room::RoomName;
use crate::store::{HistoryQuery, Page, RecentRoom};
use crate::webhooks::Outbox;

pub trait Engine: Send + Sync + 'static {
    /// Queues a message. Messages get ids (and reach subscribers) in the order of the calls, so a
    /// connection can publish again before the previous message is stored. The receipt resolves
    /// once the message is stored and handed to the hub.
    fn publish(&self, draft: Draft) -> Receipt;

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

    /// Stores everything already accepted, then stops; later publishes fail with `Stopped`.
    fn shutdown(&self) -> BoxFuture<'static, ()>;
}

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
}

impl EngineError {
    /// How metrics name this refusal.
    pub fn metric(&self) -> crate::metrics::PublishError {
        use crate::metrics::PublishError;
        match self {
            Self::Unavailable(_) => PublishError::StoreUnavailable,
            Self::Stopped => PublishError::ShuttingDown,
            Self::Overloaded => PublishError::Overloaded,
        }
    }
}

/// Resolves when a published message has been stored (or could not be).
pub struct Receipt(oneshot::Receiver<Result<Accepted, EngineError>>);

impl Receipt {
    pub fn channel() -> (oneshot::Sender<Result<Accepted, EngineError>>, Self) {
        let (sender, receiver) = oneshot::channel();
        (sender, Self(receiver))
    }
}

impl Future for Receipt {
    type Output = Result<Accepted, EngineError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|result| result.unwrap_or(Err(EngineError::Stopped)))
    }
}
