//! Redis Sentinel: the master is whichever server the sentinels name, and a failover is followed
//! without a restart.
//!
//! Commands go to a connection to the current master. A command that fails as it would on a dead
//! or demoted master (connection lost or refused, a timeout, `READONLY`) makes this ask the
//! sentinels again, at most every `ASK_EVERY`; when they name another master, later commands go
//! there and a disconnection notice goes to the subscriber, which subscribes again on the new
//! master and catches up from its streams. Until a master answers writes, commands fail, so the
//! node is not ready.

use std::sync::atomic::{AtomicBool, Ordering};
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

/// The sentinels are asked at most this often.
const ASK_EVERY: Duration = Duration::from_millis(250);

pub struct Followed {
    sentinel: tokio::sync::Mutex<SentinelClient>,
    master: RwLock<Master>,
    config: ConnectionManagerConfig,
    pushes: PushQueue,
    asking: AtomicBool,
    /// Where the sentinels are asked, apart from the failed command.
    tasks: Tasks,
}

struct Master {
    address: String,
    connection: ConnectionManager,
}

impl Followed {
    /// Asks the sentinels (`host:port` each) for the master named `name`; fails when none of
    /// them answers.
    pub async fn open(
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
        Ok(Arc::new(Self {
            sentinel: tokio::sync::Mutex::new(sentinel),
            master: RwLock::new(Master {
                address,
                connection,
            }),
            config,
            pushes,
            asking: AtomicBool::new(false),
            tasks,
        }))
    }

    /// The connection to the master as it is known now.
    pub fn current(&self) -> ConnectionManager {
        self.master
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .connection
            .clone()
    }

    /// After a failed command: if it failed as on a dead or demoted master, ask the sentinels.
    pub fn failed(self: &Arc<Self>, error: &RedisError) {
        let failover = error.is_io_error()
            || error.is_connection_refusal()
            || error.is_connection_dropped()
            || error.is_timeout()
            || error.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly);
        if !failover || self.asking.swap(true, Ordering::AcqRel) {
            return;
        }
        let followed = self.clone();
        self.tasks.spawn(async move {
            let started = Instant::now();
            followed.ask().await;
            tokio::time::sleep_until(started + ASK_EVERY).await;
            followed.asking.store(false, Ordering::Release);
        });
    }

    async fn ask(&self) {
        let client = match self.sentinel.lock().await.async_get_client().await {
            Ok(client) => client,
            Err(error) => {
                tracing::debug!(%error, "the sentinels name no master yet");
                return;
            }
        };
        let address = client.get_connection_info().addr().to_string();
        let mut master = self.master.write().unwrap_or_else(|p| p.into_inner());
        if address == master.address {
            return;
        }
        match ConnectionManager::new_lazy_with_config(client, self.config.clone()) {
            Ok(connection) => {
                tracing::warn!(from = %master.address, to = %address,
                    "Redis Sentinel names another master; following it");
                *master = Master {
                    address,
                    connection,
                };
            }
            Err(error) => {
                tracing::warn!(%error, %address, "cannot use the master the sentinels name");
                return;
            }
        }
        drop(master);
        // The subscriber subscribes again on the new master and catches up from its streams.
        let notice = PushInfo {
            kind: PushKind::Disconnection,
            data: Vec::new(),
        };
        let _ = self.pushes.send(notice);
    }
}
