//! Age retention on a timer: messages older than `LIVECHAT_HISTORY_MAX_AGE` leave every room's
//! stream even when nothing is written to it any more (the publish script trims only the room it
//! writes). Each node walks the rooms written within the room TTL; trimming is idempotent, so
//! several nodes doing it at once only repeat work.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use futures_util::future::join_all;
use redis::{RedisResult, Script};
use tokio_util::sync::CancellationToken;

use super::Health;
use super::connection::Connection;
use super::keys::Keys;
use crate::room::RoomName;
use crate::store::now_ms;

/// KEYS: stream, byte total. ARGV: cutoff (ms), most entries to delete. Deletes the oldest
/// entries stored before the cutoff; returns 1 when it stopped at its bound with more to delete.
const TRIM_SCRIPT: &str = r#"
local cutoff, budget = tonumber(ARGV[1]), tonumber(ARGV[2])
while budget > 0 do
  local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', math.min(budget, 100))
  if #oldest == 0 then break end
  for _, entry in ipairs(oldest) do
    local fields, size, ts = entry[2], 0, nil
    for i = 1, #fields, 2 do
      if fields[i] == 'ts' then ts = tonumber(fields[i + 1])
      else size = size + string.len(fields[i + 1]) end
    end
    if ts and ts >= cutoff then return 0 end
    redis.call('XDEL', KEYS[1], entry[1])
    redis.call('DECRBY', KEYS[2], size)
    budget = budget - 1
  end
end
if redis.call('XLEN', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[2], 0, 'KEEPTTL')
  return 0
end
if budget == 0 then return 1 end
return 0
"#;

static TRIM: LazyLock<Script> = LazyLock::new(|| Script::new(TRIM_SCRIPT));

/// Entries one script call deletes at most, so that Redis is never blocked long.
const DELETE_BUDGET: usize = 1000;
/// Rooms trimmed at once.
const ROOMS_AT_ONCE: isize = 256;

pub struct AgeTrimmer {
    pub connection: Connection,
    pub keys: Keys,
    pub max_age: Duration,
    pub health: Arc<Health>,
}

impl AgeTrimmer {
    pub async fn run(mut self, stop: CancellationToken) {
        let every = (self.max_age / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
        let mut ticks = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = ticks.tick() => {}
            }
            if let Err(error) = self.trim_all().await {
                tracing::warn!(%error, "cannot trim old messages; trying again later");
                self.health.failed(&error);
            }
        }
    }

    async fn trim_all(&mut self) -> RedisResult<()> {
        let cutoff = now_ms().saturating_sub(self.max_age.as_millis() as u64);
        let mut start = 0;
        loop {
            let rooms: Vec<String> = redis::cmd("ZRANGE")
                .arg(self.keys.recent())
                .arg(start)
                .arg(start + ROOMS_AT_ONCE - 1)
                .query_async(&mut self.connection)
                .await?;
            let trims = rooms
                .iter()
                .filter_map(|room| RoomName::parse(room).ok())
                .map(|room| self.trim(room, cutoff));
            for trimmed in join_all(trims).await {
                trimmed?;
            }
            if (rooms.len() as isize) < ROOMS_AT_ONCE {
                return Ok(());
            }
            start += ROOMS_AT_ONCE;
        }
    }

    async fn trim(&self, room: RoomName, cutoff: u64) -> RedisResult<()> {
        let mut connection = self.connection.clone();
        loop {
            let more: i64 = TRIM
                .key(self.keys.stream(&room))
                .key(self.keys.bytes(&room))
                .arg(cutoff)
                .arg(DELETE_BUDGET)
                .invoke_async(&mut connection)
                .await?;
            if more == 0 {
                return Ok(());
            }
        }
    }
}
