//! The Redis engine: several nodes share rooms, one order per room, and one history.
//!
//! A publish runs one script on Redis that gives the message the room's next id, appends it to
//! the room's stream (history, trimmed by count, bytes and age) and publishes it on the room's channel, all in
//! one atomic step. Every node with local members in the room is subscribed to that channel and
//! hands what arrives to its hub, so every member on every node sees Redis' order.
//!
//! - `connection`: one RESP3 connection (single server or cluster), resubscribing by itself
//! - `sentinel`: the master Redis Sentinel names, followed after a failover
//! - `publisher`: batches publishes into pipelines, one per room
//! - `subscriber`: subscribes while a room has local members; dedupes and fills gaps by id,
//!   follows a room's new epoch
//! - `stream`: reads history pages, missed ranges and a room's numbering (epoch, last id)
//! - `nodes`: this node's rooms and member counts under a TTL, for `GET /chat/rooms/`, and
//!   which nodes are alive
//! - `presence`: this node's members of each room relayed to the others, theirs read
//! - `retention`: messages past the maximum age trimmed on a timer
//! - `webhooks`: the webhook outbox, a stream read by one node at a time

mod connection;
mod keys;
mod nodes;
mod presence;
mod publisher;
mod retention;
mod sentinel;
mod stream;
mod subscriber;
mod webhooks;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use redis::RedisError;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use subscriber::{RoomCommands, RoomRegistry};

use self::connection::{Connection, PushQueue, Servers};
use self::keys::Keys;
use self::nodes::Registration;
use self::presence::Relay;
use self::publisher::Publisher;
use self::subscriber::Subscriber;
use self::webhooks::RedisOutbox;
use super::queue::{QueueSender, queue};
use super::{Engine, EngineError, Receipt, RoomCount};
use crate::hub::Hub;
use crate::message::{Author, Draft};
use crate::metrics::Metrics;
use crate::presence::{PresenceList, Roster};
use crate::room::RoomName;
use crate::store::{HistoryQuery, Page, RecentRoom, Retention};
use crate::webhooks::{EventKind, Outbox, WebhookSettings};

/// Messages Redis pushed that may wait for the subscriber; past it the subscriber catches up from
/// the streams instead.
const PUSH_QUEUE: usize = 65_536;

pub struct RedisSettings {
    /// With `sentinel_master`, the sentinels' addresses.
    pub urls: Vec<String>,
    pub cluster: bool,
    /// The name of the master Redis Sentinel watches: `urls` are sentinels.
    pub sentinel_master: Option<String>,
    /// Replicas that must have a message before it is acknowledged (`WAIT`).
    pub wait_replicas: u32,
    pub prefix: String,
    pub timeout: Duration,
    pub node_id: String,
    pub node_ttl: Duration,
    /// A room's keys expire after this long without a message (zero: never).
    pub room_ttl: Duration,
    pub retention: Retention,
    pub metrics: Arc<Metrics>,
    /// Events recorded for the app's webhook, if one is set.
    pub webhooks: Option<WebhookSettings>,
}

pub struct RedisEngine {
    jobs: QueueSender<()>,
    connection: Connection,
    keys: Keys,
    registry: Arc<RoomRegistry>,
    roster: Arc<Roster>,
    health: Arc<Health>,
    max_age: Option<Duration>,
    room_ttl: Duration,
    stop: CancellationToken,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    outbox: Option<Arc<RedisOutbox>>,
}

impl RedisEngine {
    /// Connects and starts the publisher, subscriber and presence tasks. `registry` must be the
    /// observer of `hub`, and `commands` its receiver.
    pub async fn start(
        settings: RedisSettings,
        hub: Arc<Hub>,
        roster: Arc<Roster>,
        registry: Arc<RoomRegistry>,
        commands: RoomCommands,
    ) -> Result<Self, RedisError> {
        let (pushes, pushed, overflowed) = PushQueue::new(PUSH_QUEUE);
        let servers = match &settings.sentinel_master {
            Some(master) => Servers::Sentinel {
                sentinels: &settings.urls,
                master,
            },
            None => Servers::Urls {
                urls: &settings.urls,
                cluster: settings.cluster,
            },
        };
        let connection = Connection::open(servers, settings.timeout, pushes).await?;
        let keys = Keys::new(&settings.prefix);
        let health = Arc::new(Health::new(&settings.metrics));
        let stop = CancellationToken::new();
        let (jobs, queued) = queue();
        let outbox = settings.webhooks.map(|webhooks| {
            Arc::new(RedisOutbox::new(
                connection.clone(),
                keys.clone(),
                settings.node_id.clone(),
                webhooks.max_bytes,
            ))
        });
        let message_events = settings
            .webhooks
            .is_some_and(|webhooks| webhooks.wants(EventKind::Message));
        let publisher = Publisher {
            connection: connection.clone(),
            keys: keys.clone(),
            max_count: settings.retention.max_count,
            max_age: settings.retention.max_age,
            max_bytes: settings.retention.max_bytes,
            dedupe_window: settings.retention.dedupe_window,
            room_ttl: settings.room_ttl,
            wait_replicas: settings.wait_replicas,
            wait_timeout: settings.timeout / 2,
            health: health.clone(),
            metrics: settings.metrics.clone(),
            outbox: outbox.clone().filter(|_| message_events),
        };
        let subscriber = Subscriber {
            connection: connection.clone(),
            keys: keys.clone(),
            hub: hub.clone(),
            roster: roster.clone(),
            health: health.clone(),
            room_ttl: settings.room_ttl,
            delivered: HashMap::new(),
        };
        let registration = Registration {
            connection: connection.clone(),
            keys: keys.clone(),
            node_id: settings.node_id,
            ttl: settings.node_ttl,
            hub,
            roster: roster.clone(),
            health: health.clone(),
        };
        let relay = Relay {
            connection: connection.clone(),
            keys: keys.clone(),
            ttl: settings.node_ttl,
            roster: roster.clone(),
            health: health.clone(),
        };
        let mut tasks = Vec::new();
        if let Some(max_age) = settings.retention.max_age {
            let trimmer = retention::AgeTrimmer {
                connection: connection.clone(),
                keys: keys.clone(),
                max_age,
                health: health.clone(),
            };
            tasks.push(tokio::spawn(trimmer.run(stop.clone())));
        }
        tasks.extend([
            tokio::spawn(publisher.run(queued)),
            tokio::spawn(subscriber.run(commands, pushed, overflowed, stop.clone())),
            tokio::spawn(registration.run(stop.clone())),
            tokio::spawn(relay.run(stop.clone())),
        ]);
        Ok(Self {
            jobs,
            connection,
            keys,
            registry,
            roster,
            health,
            max_age: settings.retention.max_age,
            room_ttl: settings.room_ttl,
            stop,
            tasks: Mutex::new(tasks),
            outbox,
        })
    }
}

impl Engine for RedisEngine {
    fn publish(&self, draft: Draft) -> Receipt {
        self.jobs.publish(draft)
    }

    fn history(&self, query: HistoryQuery) -> BoxFuture<'static, Result<Page, EngineError>> {
        let mut connection = self.connection.clone();
        let keys = self.keys.clone();
        let (max_age, room_ttl) = (self.max_age, self.room_ttl);
        async move {
            stream::page(&mut connection, &keys, &query, max_age, room_ttl)
                .await
                .map_err(unavailable)
        }
        .boxed()
    }

    fn room_ready(&self, room: &RoomName) -> BoxFuture<'static, Result<(), EngineError>> {
        self.registry.ready(room)
    }

    fn recent_rooms(
        &self,
        limit: usize,
    ) -> BoxFuture<'static, Result<Vec<RecentRoom>, EngineError>> {
        let mut connection = self.connection.clone();
        let keys = self.keys.clone();
        let room_ttl = self.room_ttl;
        async move {
            stream::recent_rooms(&mut connection, &keys, limit, room_ttl)
                .await
                .map_err(unavailable)
        }
        .boxed()
    }

    fn rooms(&self) -> BoxFuture<'static, Result<Vec<RoomCount>, EngineError>> {
        let mut connection = self.connection.clone();
        let keys = self.keys.clone();
        async move {
            nodes::rooms(&mut connection, &keys)
                .await
                .map_err(unavailable)
        }
        .boxed()
    }

    fn presence(&self, room: &RoomName) -> BoxFuture<'static, Result<PresenceList, EngineError>> {
        let mut connection = self.connection.clone();
        let keys = self.keys.clone();
        let room = room.clone();
        let roster = self.roster.clone();
        async move {
            let nodes = presence::read_room(&mut connection, &keys, &room)
                .await
                .map_err(unavailable)?;
            // This node's part as it is now, not as last relayed.
            let here = roster.local(&room);
            let others = nodes.iter().filter(|(node, _)| node != roster.node());
            Ok(PresenceList::of(
                &room,
                others.map(|(_, view)| view).chain([&here]),
            ))
        }
        .boxed()
    }

    fn typing(&self, room: &RoomName, user: Arc<Author>) {
        presence::typing(&self.connection, &self.keys, room, Author::clone(&user));
    }

    fn readiness(&self) -> Result<(), EngineError> {
        if self.jobs.is_stopped() {
            return Err(EngineError::Stopped);
        }
        self.health.check()
    }

    fn outbox(&self) -> Option<Arc<dyn Outbox>> {
        let outbox = self.outbox.clone()?;
        Some(Arc::new(outbox))
    }

    fn shutdown(&self) -> BoxFuture<'static, ()> {
        self.jobs.stop();
        self.stop.cancel();
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        async move {
            for task in tasks {
                let _ = task.await;
            }
        }
        .boxed()
    }
}

fn unavailable(error: RedisError) -> EngineError {
    EngineError::Unavailable(format!("Redis: {error}"))
}

/// Whether Redis is usable, as the last command (or a disconnection notice) showed. Every change
/// is logged: a warning when Redis becomes unusable, a line when it is usable again.
pub struct Health {
    problem: Mutex<Option<String>>,
    errors: metrics::Counter,
    reconnects: metrics::Counter,
}

impl Health {
    fn new(metrics: &Metrics) -> Self {
        Self {
            problem: Mutex::default(),
            errors: metrics.redis_errors.clone(),
            reconnects: metrics.redis_reconnects.clone(),
        }
    }

    /// The connection is back and every subscription caught up.
    pub fn reconnected(&self) {
        self.reconnects.increment(1);
    }

    fn set(&self, problem: Option<String>) {
        let mut current = self.problem.lock().unwrap_or_else(|p| p.into_inner());
        match (&*current, &problem) {
            (None, Some(problem)) => tracing::warn!(%problem, "Redis unusable: not ready"),
            (Some(_), None) => tracing::info!("Redis usable again: ready"),
            _ => {}
        }
        *current = problem;
    }

    pub fn succeeded(&self) {
        self.set(None);
    }

    pub fn failed(&self, error: &RedisError) {
        self.errors.increment(1);
        self.set(Some(format!("Redis: {error}")));
    }

    pub fn disconnected(&self) {
        self.errors.increment(1);
        self.set(Some("Redis: connection lost".into()));
    }

    pub fn check(&self) -> Result<(), EngineError> {
        match &*self.problem.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(problem) => Err(EngineError::Unavailable(problem.clone())),
            None => Ok(()),
        }
    }
}
