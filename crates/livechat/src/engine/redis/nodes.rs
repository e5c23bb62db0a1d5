//! The node registry in Redis: each node writes its rooms and local member counts under its own
//! key with a TTL and refreshes it (and its presence in each room) every third of the TTL, so
//! the members of a node that died drop out of `GET /chat/rooms/` within the TTL. Between
//! refreshes it looks for nodes that stopped refreshing: their users leave the roster. The
//! refresh doubles as the connection's heartbeat: it reconnects after an outage and marks the
//! node ready again.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::{RedisResult, Script};
use tokio_util::sync::CancellationToken;

use super::Health;
use super::connection::Connection;
use super::keys::Keys;
use crate::engine::RoomCount;
use crate::hub::Hub;
use crate::presence::Roster;
use crate::room::RoomName;
use crate::store::now_ms;

/// KEYS: the node's room hash. ARGV: TTL in ms, then room, count pairs.
const REGISTER_SCRIPT: &str = r#"
redis.call('DEL', KEYS[1])
if #ARGV > 1 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 2))
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return 1
"#;

static REGISTER: LazyLock<Script> = LazyLock::new(|| Script::new(REGISTER_SCRIPT));

pub struct Registration {
    pub connection: Connection,
    pub keys: Keys,
    pub node_id: String,
    pub ttl: Duration,
    pub hub: Arc<Hub>,
    pub roster: Arc<Roster>,
    pub health: Arc<Health>,
}

impl Registration {
    pub async fn run(mut self, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(self.ttl / 3);
        let mut checks = tokio::time::interval((self.ttl / 4).min(Duration::from_secs(1)));
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = ticks.tick() => match self.register().await {
                    Ok(()) => self.health.succeeded(),
                    Err(error) => self.health.failed(&error),
                },
                _ = checks.tick() => match live_nodes(&mut self.connection, &self.keys).await {
                    Ok(live) => self.roster.retain_nodes(&live.into_iter().collect()),
                    Err(error) => self.health.failed(&error),
                },
            }
        }
        // Leaving cleanly: this node's members are gone now, not after the TTL.
        let _: RedisResult<()> = redis::pipe()
            .del(self.keys.node_rooms(&self.node_id))
            .query_async(&mut self.connection)
            .await;
        let _: RedisResult<()> = redis::cmd("ZREM")
            .arg(self.keys.nodes())
            .arg(&self.node_id)
            .query_async(&mut self.connection)
            .await;
    }

    async fn register(&mut self) -> RedisResult<()> {
        let ttl_ms = self.ttl.as_millis() as u64;
        let mut register = REGISTER.key(self.keys.node_rooms(&self.node_id));
        register.arg(ttl_ms);
        let rooms = self.hub.room_counts();
        for (room, members) in &rooms {
            register.arg(room.as_str()).arg(members);
        }
        register.invoke_async::<i64>(&mut self.connection).await?;
        // One command per room (each in its room's slot on a cluster).
        let refreshes = rooms.iter().map(|(room, _)| {
            let mut connection = self.connection.clone();
            let key = self.keys.presence(room, &self.node_id);
            async move {
                redis::cmd("PEXPIRE")
                    .arg(key)
                    .arg(ttl_ms)
                    .query_async::<i64>(&mut connection)
                    .await
            }
        });
        for refreshed in futures_util::future::join_all(refreshes).await {
            refreshed?;
        }
        let now = now_ms();
        redis::pipe()
            .cmd("ZADD")
            .arg(self.keys.nodes())
            .arg(now + ttl_ms)
            .arg(&self.node_id)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(self.keys.nodes())
            .arg("-inf")
            .arg(now)
            .ignore()
            .query_async(&mut self.connection)
            .await
    }
}

/// The nodes whose registration has not expired.
pub async fn live_nodes(connection: &mut Connection, keys: &Keys) -> RedisResult<Vec<String>> {
    redis::cmd("ZRANGEBYSCORE")
        .arg(keys.nodes())
        .arg(now_ms())
        .arg("+inf")
        .query_async(connection)
        .await
}

/// Rooms with members on any live node, member counts summed, sorted by name.
pub async fn rooms(connection: &mut Connection, keys: &Keys) -> RedisResult<Vec<RoomCount>> {
    let nodes = live_nodes(connection, keys).await?;
    let mut totals: BTreeMap<RoomName, u64> = BTreeMap::new();
    for node in nodes {
        let rooms: Vec<(String, u64)> = redis::cmd("HGETALL")
            .arg(keys.node_rooms(&node))
            .query_async(connection)
            .await?;
        for (room, members) in rooms {
            if let Ok(room) = RoomName::parse(&room) {
                *totals.entry(room).or_default() += members;
            }
        }
    }
    Ok(totals
        .into_iter()
        .map(|(room, members)| RoomCount { room, members })
        .collect())
}
