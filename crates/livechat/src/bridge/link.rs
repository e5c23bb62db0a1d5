//! The layer's Redis hosts, and what the bridge does there, in `channels_redis`' own keys
//! (`layer`): join groups, send to a group's channels within their capacity, and read the
//! bridge's channel under a lease, so that one node at a time reads it.

use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, RedisResult};

use super::layer::{channel_key, consistent_hash, group_key, non_local_name, now_seconds};

/// How long one blocking read of the bridge's channel waits for a message.
pub const BLOCK: Duration = Duration::from_secs(1);
/// Messages taken from the bridge's channel at once.
const BATCH: usize = 64;

/// KEYS: the group. ARGV: now less the group expiry. Forgets members that were not added again
/// within the expiry (as `group_send` does), then lists the others.
static GROUP_MEMBERS: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
        redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[1])
        return redis.call('ZRANGE', KEYS[1], 0, -1)
        ",
    )
});

/// `group_send`'s script, with its expiry pass folded in, for several messages in order. KEYS:
/// channels' sorted sets (K). ARGV: a body per message and key (message after message), a
/// capacity per key, a score per message (its time, as a string: Lua would round it), the oldest
/// score kept, the expiry, the number of messages. Returns how many times a channel was full.
static SEND: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
        local keys = #KEYS
        local count = tonumber(ARGV[#ARGV])
        local expiry = tonumber(ARGV[#ARGV - 1])
        local oldest = ARGV[#ARGV - 2]
        local over_capacity = 0
        for i = 1, keys do
            redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, oldest)
            local held = redis.call('ZCOUNT', KEYS[i], '-inf', '+inf')
            local capacity = tonumber(ARGV[count * keys + i])
            for m = 0, count - 1 do
                if held < capacity then
                    redis.call('ZADD', KEYS[i], ARGV[count * keys + keys + m + 1], ARGV[m * keys + i])
                    held = held + 1
                else
                    over_capacity = over_capacity + 1
                end
            end
            redis.call('EXPIRE', KEYS[i], expiry)
        end
        return over_capacity
        ",
    )
});

/// KEYS: the lease. ARGV: this node, its time to live (ms). Takes the lease when nobody holds it,
/// extends it when this node does; 1 when this node holds it now.
static LEASE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
        local holder = redis.call('GET', KEYS[1])
        if holder == false then
            redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
            return 1
        end
        if holder == ARGV[1] then
            redis.call('PEXPIRE', KEYS[1], ARGV[2])
            return 1
        end
        return 0
        ",
    )
});

/// KEYS: the channel, its in-flight set. ARGV: now less the expiry, most to take. Drops (and
/// counts) what expired, then moves the oldest messages to the in-flight set, keeping their
/// scores: `{expired, {body, score, ...}}`.
static TAKE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
        local expired = redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[1])
        local taken = redis.call('ZPOPMIN', KEYS[1], ARGV[2])
        for i = 1, #taken, 2 do
            redis.call('ZADD', KEYS[2], taken[i + 1], taken[i])
        end
        return {expired, taken}
        ",
    )
});

/// KEYS: the channel, its in-flight set. Puts back what a reader took and did not finish (it
/// stopped, or lost the lease), with the scores it had; the bodies keep their nonce, so one that
/// was published already is not stored again.
static PUT_BACK: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
        local taken = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
        for i = 1, #taken, 2 do
            redis.call('ZADD', KEYS[1], taken[i + 1], taken[i])
        end
        redis.call('DEL', KEYS[2])
        return #taken / 2
        ",
    )
});

/// The layer's hosts, in the app's order (the hashing depends on it).
pub struct Link {
    hosts: Vec<ConnectionManager>,
    /// The blocking reads of the bridge's channel, on a connection of their own.
    reader: ConnectionManager,
    prefix: String,
    /// The bridge's channels are `{name}!{group}`: they share the sorted set `{prefix}{name}!`.
    name: String,
    expiry: u64,
    group_expiry: u64,
    capacity: u64,
}

/// A message taken from the bridge's channel: its body as stored.
pub struct Taken {
    pub body: Vec<u8>,
}

pub struct LinkSettings<'a> {
    pub urls: &'a [String],
    pub prefix: &'a str,
    pub name: &'a str,
    pub expiry: Duration,
    pub group_expiry: Duration,
    pub capacity: u64,
    pub timeout: Duration,
}

impl Link {
    /// Connects lazily: a node starts while the layer's Redis is down.
    pub fn open(settings: LinkSettings<'_>) -> RedisResult<Self> {
        let hosts = settings
            .urls
            .iter()
            .map(|url| manager(url, settings.timeout, settings.timeout))
            .collect::<RedisResult<Vec<_>>>()?;
        let channel = format!("{}!", settings.name);
        let reader_url = &settings.urls[consistent_hash(&channel, settings.urls.len())];
        let reader = manager(reader_url, settings.timeout, BLOCK + settings.timeout)?;
        Ok(Self {
            hosts,
            reader,
            prefix: settings.prefix.to_owned(),
            name: settings.name.to_owned(),
            expiry: settings.expiry.as_secs().max(1),
            group_expiry: settings.group_expiry.as_secs().max(1),
            capacity: settings.capacity,
        })
    }

    fn host(&self, name: &str) -> ConnectionManager {
        self.hosts[consistent_hash(name, self.hosts.len())].clone()
    }

    /// The bridge's channel in `group`.
    pub fn channel(&self, group: &str) -> String {
        format!("{}!{group}", self.name)
    }

    /// The group a channel of the bridge is in, if it is one of the bridge's.
    pub fn group_of<'a>(&self, channel: &'a str) -> Option<&'a str> {
        channel
            .strip_prefix(self.name.as_str())
            .and_then(|rest| rest.strip_prefix('!'))
    }

    /// Adds the bridge's channel to `groups` (or refreshes it), as `group_add` does.
    pub async fn join(&self, groups: &[String]) -> RedisResult<()> {
        let now = now_seconds();
        let mut by_host: Vec<redis::Pipeline> = vec![redis::pipe(); self.hosts.len()];
        for group in groups {
            let key = group_key(&self.prefix, group);
            by_host[consistent_hash(group, self.hosts.len())]
                .zadd(&key, self.channel(group), now)
                .ignore()
                .expire(&key, self.group_expiry as i64)
                .ignore();
        }
        for (pipe, mut host) in by_host.into_iter().zip(self.hosts.iter().cloned()) {
            if pipe.cmd_iter().next().is_none() {
                continue;
            }
            pipe.query_async::<()>(&mut host).await?;
        }
        Ok(())
    }

    /// Groups on every host whose names match `pattern` (a SCAN glob), at most `max`.
    pub async fn groups_like(&self, pattern: &str, max: usize) -> RedisResult<Vec<String>> {
        let glob = format!("{}:group:{pattern}", escape_glob(&self.prefix));
        let skip = format!("{}:group:", self.prefix).len();
        let mut found = Vec::new();
        for host in &self.hosts {
            let mut host = host.clone();
            let mut cursor = 0u64;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&glob)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut host)
                    .await?;
                found.extend(
                    keys.into_iter()
                        .filter_map(|key| key.get(skip..).map(str::to_owned)),
                );
                if next == 0 || found.len() >= max {
                    break;
                }
                cursor = next;
            }
        }
        found.truncate(max);
        Ok(found)
    }

    /// `group_send` of `count` messages, in order, to `group` (`seal(m, channels)`: message `m`
    /// for the channels of one sorted set), the bridge's own channels left out; how many times a
    /// channel was at its capacity.
    pub async fn group_send(
        &self,
        group: &str,
        count: usize,
        seal: impl Fn(usize, &[&str]) -> Vec<u8>,
    ) -> RedisResult<u64> {
        let now = now_seconds();
        let mut host = self.host(group);
        let members: Vec<String> = GROUP_MEMBERS
            .key(group_key(&self.prefix, group))
            .arg((now as i64) - self.group_expiry as i64)
            .invoke_async(&mut host)
            .await?;
        // Channels by the sorted set they share, in the order first seen.
        let mut sets: Vec<(String, Vec<&str>)> = Vec::new();
        for channel in members
            .iter()
            .filter(|channel| self.group_of(channel).is_none())
        {
            let key = channel_key(&self.prefix, channel);
            match sets.iter_mut().find(|(set, _)| *set == key) {
                Some((_, channels)) => channels.push(channel),
                None => sets.push((key, vec![channel])),
            }
        }
        let mut over_capacity = 0;
        for index in 0..self.hosts.len() {
            let here: Vec<&(String, Vec<&str>)> = sets
                .iter()
                .filter(|(_, channels)| {
                    consistent_hash(non_local_name(channels[0]), self.hosts.len()) == index
                })
                .collect();
            if here.is_empty() {
                continue;
            }
            let mut invocation = SEND.prepare_invoke();
            for (key, _) in &here {
                invocation.key(key);
            }
            for message in 0..count {
                for (_, channels) in &here {
                    invocation.arg(seal(message, channels));
                }
            }
            for _ in &here {
                invocation.arg(self.capacity);
            }
            // A microsecond apart, written exactly, so that they are read in order.
            let first = (now * 1e6) as u64;
            for micros in (first..).take(count) {
                invocation.arg(format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000));
            }
            invocation
                .arg((now as i64) - self.expiry as i64)
                .arg(self.expiry)
                .arg(count);
            let mut host = self.hosts[index].clone();
            over_capacity += invocation.invoke_async::<u64>(&mut host).await?;
        }
        Ok(over_capacity)
    }

    fn queue_key(&self) -> String {
        channel_key(&self.prefix, &self.channel(""))
    }

    fn inflight_key(&self) -> String {
        format!("{}$inflight", self.queue_key())
    }

    /// Takes or extends the lease on reading the bridge's channel: whether `node` holds it.
    pub async fn hold_lease(&self, node: &str, ttl: Duration) -> RedisResult<bool> {
        let mut host = self.host(&self.channel(""));
        let held: i64 = LEASE
            .key(format!("{}$lease", self.queue_key()))
            .arg(node)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut host)
            .await?;
        Ok(held == 1)
    }

    /// Puts back what a reader took and did not finish; how many.
    pub async fn put_back(&self) -> RedisResult<u64> {
        let mut host = self.host(&self.channel(""));
        PUT_BACK
            .key(self.queue_key())
            .key(self.inflight_key())
            .invoke_async(&mut host)
            .await
    }

    /// The messages waiting in the bridge's channel, oldest first (moved to the in-flight set
    /// until `done`), and how many had expired there unread. Waits up to `BLOCK` when there are
    /// none.
    pub async fn take(&self) -> RedisResult<(Vec<Taken>, u64)> {
        let mut host = self.host(&self.channel(""));
        let oldest = (now_seconds() as i64) - self.expiry as i64;
        let (expired, flat): (u64, Vec<(Vec<u8>, f64)>) = TAKE
            .key(self.queue_key())
            .key(self.inflight_key())
            .arg(oldest)
            .arg(BATCH)
            .invoke_async(&mut host)
            .await?;
        if !flat.is_empty() || expired > 0 {
            let taken = flat.into_iter().map(|(body, _)| Taken { body }).collect();
            return Ok((taken, expired));
        }
        let mut reader = self.reader.clone();
        let popped: Option<(String, Vec<u8>, f64)> = reader
            .bzpopmin(self.queue_key(), BLOCK.as_secs_f64())
            .await?;
        let Some((_, body, sent)) = popped else {
            return Ok((Vec::new(), 0));
        };
        let _: () = host.zadd(self.inflight_key(), &body, sent).await?;
        if sent < oldest as f64 {
            let _: () = host.zrem(self.inflight_key(), &body).await?;
            return Ok((Vec::new(), 1));
        }
        Ok((vec![Taken { body }], 0))
    }

    /// `taken` are published: out of the in-flight set.
    pub async fn done(&self, taken: &[Taken]) -> RedisResult<()> {
        let mut host = self.host(&self.channel(""));
        let bodies: Vec<&[u8]> = taken.iter().map(|taken| taken.body.as_slice()).collect();
        host.zrem(self.inflight_key(), bodies).await
    }
}

fn manager(url: &str, timeout: Duration, response: Duration) -> RedisResult<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(response))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_lazy_with_config(redis::Client::open(url)?, config)
}

/// `text` matched literally in a SCAN pattern.
pub fn escape_glob(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}
