//! The Redis engine: several nodes share rooms, one order per room, and one history.
//!
//! A publish runs one script on Redis that gives the message the room's next id, appends it to
//! the room's stream (history, trimmed by count, bytes and age) and publishes it on the room's channel, all in
//! one atomic step. Every node with local members in the room is subscribed to that channel and
//! hands what arrives to its hub, so every member on every node sees Redis' order.
//!
//! - `connection`: one RESP3 connection (single server or cluster), resubscribing by itself
//! - `link`: the server (or the master Redis Sentinel names) followed after a failover, and a
//!   stalled connection replaced
//! - `publisher`: batches publishes into pipelines, one per room
//! - `subscriber`: subscribes while a room has local members; dedupes and fills gaps by id,
//!   follows a room's new epoch
//! - `stream`: reads history pages, missed ranges and a room's numbering (epoch, last id)
//! - `nodes`: this node's rooms and member counts under a TTL, for `GET /chat/rooms/`, and
//!   which nodes are alive
//! - `presence`: this node's members of each room relayed to the others, theirs read
//! - `retention`: messages past the maximum age trimmed on a timer
//! - `webhooks`: the webhook outbox, a stream read by one node at a time
//! - `moderation`: the bans, a room's stored size, a user's messages
//! - `migrate`: copies an embedded history file into Redis (`livechat migrate`)

mod changes;
mod connection;
mod keys;
mod link;
pub mod migrate;
mod moderation;
mod nodes;
mod presence;
mod publisher;
mod retention;
mod stream;
mod subscriber;
mod webhooks;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use redis::RedisError;

pub use subscriber::{RoomCommands, RoomRegistry};

use self::connection::{Connection, PushQueue, Servers};
use self::keys::Keys;
use self::nodes::Registration;
use self::presence::Relay;
use self::publisher::{Publisher, Work};
use self::subscriber::Subscriber;
use self::webhooks::RedisOutbox;
use super::queue::{QueueSender, queue};
use super::{ChangeReceipt, Engine, EngineError, ObserverSlot, Receipt, RoomCount, StoredObserver};
use crate::change::Change;
use crate::control::{Control, ModerationNews};
use crate::epoch::Epoch;
use crate::hub::Hub;
use crate::message::{Author, Draft, StoredMessage};
use crate::metrics::Metrics;
use crate::moderation::Ban;
use crate::presence::{PresenceList, Roster};
use crate::room::RoomName;
use crate::store::{
    Authored, HistoryQuery, Page, Place, ReadPosition, RecentRoom, Retention, RoomStats,
};
use crate::tasks::Tasks;
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
    /// How long authors may change their messages (`None`: always).
    pub edit_window: Option<Duration>,
    pub metrics: Arc<Metrics>,
    /// Events recorded for the app's webhook, if one is set.
    pub webhooks: Option<WebhookSettings>,
    /// The engine's part of the server's tasks: stopped by `shutdown`.
    pub tasks: Tasks,
}

pub struct RedisEngine {
    jobs: QueueSender<Work>,
    connection: Connection,
    keys: Keys,
    registry: Arc<RoomRegistry>,
    roster: Arc<Roster>,
    health: Arc<Health>,
    max_age: Option<Duration>,
    room_ttl: Duration,
    tasks: Tasks,
    outbox: Option<Arc<RedisOutbox>>,
    /// Who hears of moderation commands on the control channel (bans changed, a user disconnected).
    moderation: Arc<OnceLock<Arc<dyn ModerationNews>>>,
    /// Told of each message this node stores, those from the Channels layer excepted.
    stored: ObserverSlot,
}

/// KEYS: a user's read positions. ARGV: the room, the id read. Moves it forward only; returns
/// the position now.
static MARK_READ: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local wanted = tonumber(ARGV[2])
if wanted > current then
  redis.call('HSET', KEYS[1], ARGV[1], wanted)
  return wanted
end
return current",
    )
});

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
        let (pushes, pushed) = PushQueue::new(PUSH_QUEUE);
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
        let tasks = settings.tasks;
        let connection = Connection::open(servers, settings.timeout, pushes, &tasks).await?;
        let keys = Keys::new(&settings.prefix);
        let health = Arc::new(Health::new(&settings.metrics));
        let (jobs, queued) = queue();
        let moderation = Arc::new(OnceLock::new());
        let stored = ObserverSlot::default();
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
            edit_window: settings.edit_window,
            stored: stored.clone(),
            tasks: tasks.clone(),
        };
        let subscriber = Subscriber {
            connection: connection.clone(),
            keys: keys.clone(),
            hub: hub.clone(),
            roster: roster.clone(),
            health: health.clone(),
            room_ttl: settings.room_ttl,
            delivered: HashMap::new(),
            node: settings.node_id.clone(),
            moderation: moderation.clone(),
            pending: Vec::new(),
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
        if let Some(max_age) = settings.retention.max_age {
            let trimmer = retention::AgeTrimmer {
                connection: connection.clone(),
                keys: keys.clone(),
                max_age,
                health: health.clone(),
            };
            tasks.spawn_to_end(trimmer.run(tasks.token()));
        }
        // The publisher ends once `shutdown` closes its queue and it has written what was in it.
        tasks.spawn_to_end(publisher.run(queued));
        tasks.spawn_to_end(subscriber.run(commands, pushed, tasks.token()));
        tasks.spawn_to_end(registration.run(tasks.token()));
        tasks.spawn_to_end(relay.run(tasks.token()));
        Ok(Self {
            jobs,
            connection,
            keys,
            registry,
            roster,
            health,
            max_age: settings.retention.max_age,
            room_ttl: settings.room_ttl,
            tasks,
            outbox,
            moderation,
            stored,
        })
    }
}

impl Engine for RedisEngine {
    fn publish(&self, draft: Draft) -> Receipt {
        self.jobs.publish(draft)
    }

    fn change(&self, change: Change) -> ChangeReceipt {
        let (answer, receipt) = ChangeReceipt::channel();
        let _ = self.jobs.send(Work::Change(change, answer));
        receipt
    }

    fn changed_since(
        &self,
        room: &RoomName,
        through: u64,
        reader: Option<String>,
        limit: usize,
    ) -> BoxFuture<'static, Result<Vec<StoredMessage>, EngineError>> {
        let mut connection = self.connection.clone();
        let keys = self.keys.clone();
        let room = room.clone();
        async move {
            stream::changed_since(
                &mut connection,
                &keys,
                &room,
                through,
                reader.as_deref(),
                limit,
            )
            .await
            .map_err(unavailable)
        }
        .boxed()
    }

    fn control(&self, command: Control) -> BoxFuture<'static, Result<(), EngineError>> {
        let mut connection = self.connection.clone();
        let channel = self.keys.control();
        let json = command.to_json();
        async move {
            redis::cmd(connection.publish_command())
                .arg(channel)
                .arg(json?.as_ref())
                .query_async::<()>(&mut connection)
                .await
                .map_err(unavailable)
        }
        .boxed()
    }

    fn mark_read(
        &self,
        user: &str,
        room: &RoomName,
        id: u64,
    ) -> BoxFuture<'static, Result<u64, EngineError>> {
        let mut connection = self.connection.clone();
        let (key, seq, room) = (
            self.keys.reads(user),
            self.keys.sequence(room),
            room.clone(),
        );
        async move {
            let last: Option<u64> = redis::cmd("GET")
                .arg(seq)
                .query_async(&mut connection)
                .await
                .map_err(unavailable)?;
            MARK_READ
                .key(key)
                .arg(room.as_str())
                .arg(id.min(last.unwrap_or(0)))
                .invoke_async(&mut connection)
                .await
                .map_err(unavailable)
        }
        .boxed()
    }

    fn read_positions(
        &self,
        user: &str,
    ) -> BoxFuture<'static, Result<Vec<ReadPosition>, EngineError>> {
        let mut connection = self.connection.clone();
        let (key, keys) = (self.keys.reads(user), self.keys.clone());
        async move {
            let positions: HashMap<String, u64> = redis::cmd("HGETALL")
                .arg(key)
                .query_async(&mut connection)
                .await
                .map_err(unavailable)?;
            let rooms: Vec<(RoomName, u64)> = positions
                .into_iter()
                .filter_map(|(room, id)| Some((RoomName::parse(&room).ok()?, id)))
                .collect();
            // Each room's counter is in its own slot: one command each, all at once.
            let lasts = futures_util::future::try_join_all(rooms.iter().map(|(room, _)| {
                let mut connection = connection.clone();
                let seq = keys.sequence(room);
                async move {
                    redis::cmd("GET")
                        .arg(seq)
                        .query_async::<Option<u64>>(&mut connection)
                        .await
                }
            }))
            .await
            .map_err(unavailable)?;
            Ok(rooms
                .into_iter()
                .zip(lasts)
                .map(|((room, read_id), last)| ReadPosition {
                    room,
                    read_id,
                    last_id: last.unwrap_or(0),
                })
                .collect())
        }
        .boxed()
    }

    fn bans(&self) -> BoxFuture<'static, Result<Vec<Ban>, EngineError>> {
        let (mut connection, keys) = (self.connection.clone(), self.keys.clone());
        async move {
            moderation::bans(&mut connection, &keys)
                .await
                .map_err(unavailable)
        }
        .boxed()
    }

    fn put_ban(&self, ban: Ban) -> BoxFuture<'static, Result<(), EngineError>> {
        let (mut connection, keys) = (self.connection.clone(), self.keys.clone());
        async move {
            let json = crate::json::to_string(&ban)?;
            moderation::put_ban(&mut connection, &keys, &ban, json)
                .await
                .map_err(unavailable)
        }
        .boxed()
    }

    fn remove_ban(&self, id: &str) -> BoxFuture<'static, Result<bool, EngineError>> {
        let (mut connection, keys, id) =
            (self.connection.clone(), self.keys.clone(), id.to_owned());
        async move {
            moderation::remove_ban(&mut connection, &keys, &id)
                .await
                .map_err(unavailable)
        }
        .boxed()
    }

    fn open_direct(&self, room: &RoomName) -> BoxFuture<'static, Result<(), EngineError>> {
        let (mut connection, keys, room) =
            (self.connection.clone(), self.keys.clone(), room.clone());
        async move {
            moderation::open_direct(&mut connection, &keys, &room)
                .await
                .map_err(unavailable)
        }
        .boxed()
    }

    fn directs(&self, user: &str) -> BoxFuture<'static, Result<Vec<RoomName>, EngineError>> {
        let (mut connection, keys, user) =
            (self.connection.clone(), self.keys.clone(), user.to_owned());
        async move {
            moderation::directs(&mut connection, &keys, &user)
                .await
                .map_err(unavailable)
        }
        .boxed()
    }

    fn room_stats(
        &self,
        room: &RoomName,
    ) -> BoxFuture<'static, Result<(RoomStats, Epoch), EngineError>> {
        let (mut connection, keys, room) =
            (self.connection.clone(), self.keys.clone(), room.clone());
        let room_ttl = self.room_ttl;
        async move {
            let (stats, epoch) = moderation::room_stats(&mut connection, &keys, &room)
                .await
                .map_err(unavailable)?;
            let epoch = match epoch {
                Some(epoch) => epoch,
                // A room never written gets its epoch now, as its first reader would.
                None => {
                    stream::numbering(&mut connection, &keys, &room, room_ttl)
                        .await
                        .map_err(unavailable)?
                        .0
                }
            };
            Ok((stats, epoch))
        }
        .boxed()
    }

    fn authored(
        &self,
        user: &str,
        from: Option<Place>,
        limit: usize,
    ) -> BoxFuture<'static, Result<Authored, EngineError>> {
        let (mut connection, keys, user) =
            (self.connection.clone(), self.keys.clone(), user.to_owned());
        async move {
            moderation::authored(&mut connection, &keys, &user, from, limit)
                .await
                .map_err(unavailable)
        }
        .boxed()
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
        presence::typing(
            &self.connection,
            &self.keys,
            room,
            Author::clone(&user),
            &self.tasks,
        );
    }

    fn readiness(&self) -> Result<(), EngineError> {
        if self.jobs.is_stopped() {
            return Err(EngineError::Stopped);
        }
        self.health.check()
    }

    fn set_moderation(&self, moderation: Arc<dyn ModerationNews>) {
        let _ = self.moderation.set(moderation);
    }

    fn observe_stored(&self, observer: Arc<dyn StoredObserver>) {
        let _ = self.stored.set(observer);
    }

    fn outbox(&self) -> Option<Arc<dyn Outbox>> {
        let outbox = self.outbox.clone()?;
        Some(Arc::new(outbox))
    }

    fn shutdown(&self) -> BoxFuture<'static, ()> {
        // The server waits for the tasks to end (`Tasks::stop_all`).
        self.jobs.stop();
        self.tasks.stop();
        async {}.boxed()
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
