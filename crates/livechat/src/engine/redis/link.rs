//! A connection to one Redis server: a single server's own address, or the master Redis
//! Sentinel names; both are followed without a restart.
//!
//! Commands go to a connection to the current server. The connection reconnects by itself when
//! Redis closes it or refuses it, but not when it stalls: a link that drops packets without
//! closing (a dead peer, a lost NAT entry, a firewall) would otherwise hold every later command
//! until the kernel gives up on the socket, many minutes later. So a command that times out
//! (`LIVECHAT_REDIS_TIMEOUT`) condemns its connection: a new one replaces it at once. A command
//! that fails as it would on a dead or demoted master (connection lost or refused, `READONLY`)
//! makes a sentinel source ask the sentinels again. Either is done at most every `ASK_EVERY`;
//! whenever the connection is replaced, a disconnection notice goes to the subscriber, which
//! subscribes again on the new connection and catches up from the streams. Until a connection
//! answers, commands fail, so the node is not ready.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::{AsyncPushSender, ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{
    ErrorKind, ProtocolVersion, PushInfo, PushKind, RedisConnectionInfo, RedisError, RedisResult,
    ServerErrorKind,
};
use tokio::time::Instant;

use super::connection::PushQueue;
use crate::tasks::Tasks;

/// The source is asked (or a stalled connection replaced) at most this often.
const ASK_EVERY: Duration = Duration::from_millis(250);

/// Where the server's address comes from.
enum Source {
    /// One server, always the same.
    Server(redis::Client),
    /// The master that the sentinels name.
    Sentinel(tokio::sync::Mutex<SentinelClient>),
}

pub struct Link {
    source: Source,
    current: RwLock<Current>,
    config: ConnectionManagerConfig,
    pushes: PushQueue,
    asking: AtomicBool,
    /// Counts connections made so far; a failure on an older one than `current` is not news.
    generations: AtomicU64,
    /// Where the source is asked, apart from the failed command.
    tasks: Tasks,
}

struct Current {
    address: String,
    connection: ConnectionManager,
    generation: u64,
}

/// A connection and the generation it belongs to, to report its failures with.
pub struct InUse {
    pub connection: ConnectionManager,
    generation: u64,
}

impl Link {
    /// One server at `client`'s address (connected lazily, so a node starts while Redis is down).
    pub fn server(
        client: redis::Client,
        config: ConnectionManagerConfig,
        pushes: PushQueue,
        tasks: Tasks,
    ) -> RedisResult<Arc<Self>> {
        let address = client.get_connection_info().addr().to_string();
        let connection = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())?;
        Ok(Self::new(
            Source::Server(client),
            address,
            connection,
            config,
            pushes,
            tasks,
        ))
    }

    /// Asks the sentinels (`host:port` each) for the master named `name`; fails when none of
    /// them answers.
    pub async fn sentinel(
        sentinels: &[String],
        name: &str,
        config: ConnectionManagerConfig,
        pushes: PushQueue,
        tasks: Tasks,
    ) -> RedisResult<Arc<Self>> {
        let resp3 = RedisConnectionInfo::default().set_protocol(ProtocolVersion::RESP3);
        let node = SentinelNodeConnectionInfo::default().set_redis_connection_info(resp3);
        let addresses: Vec<String> = sentinels
            .iter()
            .map(|address| match address.contains("://") {
                true => address.clone(),
                false => format!("redis://{address}/"),
            })
            .collect();
        let mut sentinel = SentinelClient::build(
            addresses,
            name.to_owned(),
            Some(node),
            SentinelServerType::Master,
        )?;
        let client = sentinel.async_get_client().await?;
        let address = client.get_connection_info().addr().to_string();
        tracing::info!(%address, name, "Redis Sentinel names the master");
        let connection = ConnectionManager::new_lazy_with_config(client, config.clone())?;
        Ok(Self::new(
            Source::Sentinel(tokio::sync::Mutex::new(sentinel)),
            address,
            connection,
            config,
            pushes,
            tasks,
        ))
    }

    fn new(
        source: Source,
        address: String,
        connection: ConnectionManager,
        config: ConnectionManagerConfig,
        pushes: PushQueue,
        tasks: Tasks,
    ) -> Arc<Self> {
        Arc::new(Self {
            source,
            current: RwLock::new(Current {
                address,
                connection,
                generation: 0,
            }),
            config,
            pushes,
            asking: AtomicBool::new(false),
            generations: AtomicU64::new(0),
            tasks,
        })
    }

    /// The connection as it is known now.
    pub fn current(&self) -> InUse {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        InUse {
            connection: current.connection.clone(),
            generation: current.generation,
        }
    }

    /// After a failed command on `used`: a stalled connection is replaced; a failure as on a
    /// dead or demoted master makes a sentinel source ask the sentinels.
    pub fn failed(self: &Arc<Self>, used: &InUse, error: &RedisError) {
        let stalled = error.is_timeout();
        let failover = matches!(self.source, Source::Sentinel(_))
            && (error.is_io_error()
                || error.is_connection_refusal()
                || error.is_connection_dropped()
                || error.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly));
        if !(stalled || failover) || self.asking.swap(true, Ordering::AcqRel) {
            return;
        }
        let link = self.clone();
        let generation = used.generation;
        self.tasks.spawn(async move {
            let started = Instant::now();
            link.follow(stalled.then_some(generation)).await;
            tokio::time::sleep_until(started + ASK_EVERY).await;
            link.asking.store(false, Ordering::Release);
        });
    }

    /// Asks the source where the server is; connects there when it names another one, or when
    /// the connection of generation `stalled` is still the current one.
    async fn follow(&self, stalled: Option<u64>) {
        let client = match &self.source {
            Source::Server(client) => client.clone(),
            Source::Sentinel(sentinel) => match sentinel.lock().await.async_get_client().await {
                Ok(client) => client,
                Err(error) => {
                    tracing::debug!(%error, "the sentinels name no master yet");
                    return;
                }
            },
        };
        let address = client.get_connection_info().addr().to_string();
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        let moved = address != current.address;
        let stalled = stalled == Some(current.generation);
        if !moved && !stalled {
            return;
        }
        match ConnectionManager::new_lazy_with_config(client, self.config.clone()) {
            Ok(connection) => {
                if moved {
                    tracing::warn!(from = %current.address, to = %address,
                        "Redis Sentinel names another master; following it");
                } else {
                    tracing::warn!(%address,
                        "a Redis command timed out: the connection is replaced by a new one");
                }
                *current = Current {
                    address,
                    connection,
                    generation: self.generations.fetch_add(1, Ordering::AcqRel) + 1,
                };
            }
            Err(error) => {
                tracing::warn!(%error, %address, "cannot connect to Redis there");
                return;
            }
        }
        drop(current);
        // The subscriber subscribes again on the new connection and catches up from its streams.
        let notice = PushInfo {
            kind: PushKind::Disconnection,
            data: Vec::new(),
        };
        let _ = self.pushes.send(notice);
    }
}
