//! The webhook outbox on Redis: a stream (`{prefix}:{webhooks}:outbox`) read with a consumer
//! group, its events' bytes in `{prefix}:{webhooks}:bytes`. A message's event is added by the
//! publish script that stores the message (on a cluster, where a script cannot write two slots,
//! by the node right after); other events by `record`.
//!
//! One node at a time sends: the holder of the lease `{prefix}:{webhooks}:sender` (renewed on
//! every read, lost `LEASE` after its holder stops renewing it). A node that takes the lease first
//! claims the events the others read and did not acknowledge (`XAUTOCLAIM`): those go first, so
//! events reach the app in order per room, each at least once. Acknowledged events are deleted.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use redis::{RedisResult, Script, Value};

use super::connection::Connection;
use super::keys::Keys;
use crate::webhooks::{Event, Outbox, OutboxError, Recorded};

/// A sender that stops renewing loses the lease after this long.
const LEASE: Duration = Duration::from_secs(5);
/// The consumer group every node reads with.
const GROUP: &str = "livechat";

/// KEYS: the lease. ARGV: this node, the lease in ms. 1 while this node holds it.
static TAKE_LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0",
    )
});

/// KEYS: outbox, bytes. ARGV: most bytes, then each event's time and body. Adds the events that
/// fit; returns how many did not.
static RECORD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local held, most, dropped = tonumber(redis.call('GET', KEYS[2]) or '0'), tonumber(ARGV[1]), 0
for i = 2, #ARGV, 2 do
  local size = string.len(ARGV[i + 1])
  if held + size <= most then
    redis.call('XADD', KEYS[1], '*', 't', ARGV[i], 'e', ARGV[i + 1])
    held = held + size
    redis.call('INCRBY', KEYS[2], size)
  else
    dropped = dropped + 1
  end
end
return dropped",
    )
});

/// KEYS: outbox, bytes. ARGV: the group, the events' bytes, their ids.
static FORGET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 3))
redis.call('XDEL', KEYS[1], unpack(ARGV, 3))
if redis.call('DECRBY', KEYS[2], ARGV[2]) < 0 then redis.call('SET', KEYS[2], 0) end
return 1",
    )
});

pub struct RedisOutbox {
    connection: Connection,
    keys: Keys,
    node: String,
    max_bytes: u64,
    dropped: AtomicU64,
    /// This node held the lease at its last read (a node that takes it claims first).
    leading: AtomicBool,
    group_made: AtomicBool,
}

impl RedisOutbox {
    pub fn new(connection: Connection, keys: Keys, node: String, max_bytes: u64) -> Self {
        Self {
            connection,
            keys,
            node,
            max_bytes,
            dropped: AtomicU64::new(0),
            leading: AtomicBool::new(false),
            group_made: AtomicBool::new(false),
        }
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Counts events a publish script could not add (the outbox was full).
    pub fn count_dropped(&self, events: u64) {
        self.dropped.fetch_add(events, Ordering::Relaxed);
    }

    /// Adds events that fit (counting the others as dropped).
    pub async fn add(&self, events: &[Event]) -> RedisResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut invocation = RECORD.prepare_invoke();
        invocation
            .key(self.keys.outbox())
            .key(self.keys.outbox_bytes())
            .arg(self.max_bytes);
        for event in events {
            invocation.arg(event.ts).arg(&event.body);
        }
        let dropped: u64 = invocation
            .invoke_async(&mut self.connection.clone())
            .await?;
        self.count_dropped(dropped);
        Ok(())
    }

    /// Whether this node is the one that sends; a node that just took the lease claims every
    /// event read by others and not acknowledged.
    async fn lead(&self, connection: &mut Connection) -> RedisResult<bool> {
        let holds: u8 = TAKE_LEASE
            .key(self.keys.outbox_lease())
            .arg(&self.node)
            .arg(LEASE.as_millis() as u64)
            .invoke_async(connection)
            .await?;
        let was_leading = self.leading.swap(holds == 1, Ordering::Relaxed);
        if holds == 1 && !self.group_made.load(Ordering::Relaxed) {
            let made: RedisResult<()> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(self.keys.outbox())
                .arg(GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(connection)
                .await;
            match made {
                Err(error) if error.code() != Some("BUSYGROUP") => return Err(error),
                _ => self.group_made.store(true, Ordering::Relaxed),
            }
        }
        if holds == 1 && !was_leading {
            self.claim(connection).await?;
        }
        Ok(holds == 1)
    }

    /// Takes over every event another node read and did not acknowledge.
    async fn claim(&self, connection: &mut Connection) -> RedisResult<()> {
        let mut cursor = "0-0".to_owned();
        loop {
            let answer: Value = redis::cmd("XAUTOCLAIM")
                .arg(self.keys.outbox())
                .arg(GROUP)
                .arg(&self.node)
                .arg(0)
                .arg(&cursor)
                .arg("COUNT")
                .arg(1000)
                .arg("JUSTID")
                .query_async(connection)
                .await?;
            let next = match &answer {
                Value::Array(parts) => parts
                    .first()
                    .and_then(|next| redis::from_redis_value_ref::<String>(next).ok()),
                _ => None,
            };
            match next {
                Some(next) if next != "0-0" => cursor = next,
                _ => return Ok(()),
            }
        }
    }

    /// This node's unacknowledged events (`0`), or new ones (`>`).
    async fn read_group(
        &self,
        connection: &mut Connection,
        from: &str,
        max: usize,
    ) -> RedisResult<Vec<Recorded>> {
        let answer: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(&self.node)
            .arg("COUNT")
            .arg(max)
            .arg("STREAMS")
            .arg(self.keys.outbox())
            .arg(from)
            .query_async(connection)
            .await?;
        Ok(entries(&answer))
    }
}

/// The entries of an XREADGROUP answer (RESP2 or RESP3 shape), with their time and body.
fn entries(answer: &Value) -> Vec<Recorded> {
    let streams: Vec<&Value> = match answer {
        Value::Map(pairs) => pairs.iter().map(|(_, entries)| entries).collect(),
        Value::Array(streams) => streams
            .iter()
            .filter_map(|stream| match stream {
                Value::Array(pair) => pair.get(1),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let mut recorded = Vec::new();
    for stream in streams {
        let Value::Array(items) = stream else {
            continue;
        };
        for item in items {
            let Value::Array(entry) = item else { continue };
            let (Some(id), Some(Value::Array(fields))) = (entry.first(), entry.get(1)) else {
                // Claimed, then deleted: nothing to send.
                continue;
            };
            let Ok(id) = redis::from_redis_value_ref::<String>(id) else {
                continue;
            };
            let (mut ts, mut body) = (0, None);
            for pair in fields.chunks(2) {
                let [name, value] = pair else { continue };
                match redis::from_redis_value_ref::<String>(name).as_deref() {
                    Ok("t") => ts = redis::from_redis_value_ref::<u64>(value).unwrap_or(0),
                    Ok("e") => body = redis::from_redis_value_ref::<String>(value).ok(),
                    _ => {}
                }
            }
            if let Some(body) = body {
                recorded.push(Recorded { id, ts, body });
            }
        }
    }
    recorded
}

fn outbox_error(error: redis::RedisError) -> OutboxError {
    OutboxError(format!("Redis: {error}"))
}

impl Outbox for std::sync::Arc<RedisOutbox> {
    fn record(&self, events: Vec<Event>) -> BoxFuture<'static, Result<(), OutboxError>> {
        let outbox = self.clone();
        async move { outbox.add(&events).await.map_err(outbox_error) }.boxed()
    }

    fn read(&self, max: usize) -> BoxFuture<'static, Result<Vec<Recorded>, OutboxError>> {
        let outbox = self.clone();
        async move {
            let mut connection = outbox.connection.clone();
            if !outbox.lead(&mut connection).await.map_err(outbox_error)? {
                return Ok(Vec::new());
            }
            let unacknowledged = outbox
                .read_group(&mut connection, "0", max)
                .await
                .map_err(outbox_error)?;
            if !unacknowledged.is_empty() {
                return Ok(unacknowledged);
            }
            outbox
                .read_group(&mut connection, ">", max)
                .await
                .map_err(outbox_error)
        }
        .boxed()
    }

    fn ack(&self, delivered: &[Recorded]) -> BoxFuture<'static, Result<(), OutboxError>> {
        let outbox = self.clone();
        let bytes: u64 = delivered.iter().map(|event| event.body.len() as u64).sum();
        let ids: Vec<String> = delivered.iter().map(|event| event.id.clone()).collect();
        async move {
            if ids.is_empty() {
                return Ok(());
            }
            let mut invocation = FORGET.prepare_invoke();
            invocation
                .key(outbox.keys.outbox())
                .key(outbox.keys.outbox_bytes())
                .arg(GROUP)
                .arg(bytes);
            for id in &ids {
                invocation.arg(id);
            }
            invocation
                .invoke_async::<u8>(&mut outbox.connection.clone())
                .await
                .map(drop)
                .map_err(outbox_error)
        }
        .boxed()
    }

    fn pending(&self) -> BoxFuture<'static, Result<u64, OutboxError>> {
        let outbox = self.clone();
        async move {
            redis::cmd("XLEN")
                .arg(outbox.keys.outbox())
                .query_async(&mut outbox.connection.clone())
                .await
                .map_err(outbox_error)
        }
        .boxed()
    }

    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
