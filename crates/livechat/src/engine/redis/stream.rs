//! Reading a room's history stream: pages for `GET /chat/history/`, and ranges to fill gaps.

use std::sync::LazyLock;
use std::time::Duration;

use redis::RedisResult;
use redis::streams::StreamRangeReply;
use serde_json::value::RawValue;

use super::connection::Connection;
use super::keys::Keys;
use crate::epoch::{Epoch, new_epoch};
use crate::message::{Author, Nonce, StoredMessage};
use crate::room::RoomName;
use crate::store::{HistoryQuery, Page, PageBuilder, RecentRoom, now_ms};

/// Entries asked for in the first read of a page; later reads ask for as many as the page's
/// remaining bytes hold at the size seen so far, up to `MAX_CHUNK`.
const FIRST_CHUNK: usize = 10;
const MAX_CHUNK: usize = 200;

/// One page, oldest first; messages older than `max_age` are left out even before they are
/// trimmed. Read in chunks, so that a request holds about its byte cap, not `limit` messages.
pub async fn page(
    connection: &mut Connection,
    keys: &Keys,
    query: &HistoryQuery,
    max_age: Option<Duration>,
    room_ttl: Duration,
) -> RedisResult<Page> {
    // Read first: every message of the page is then counted in the epoch seen.
    let (epoch, last_id) = numbering(connection, keys, &query.room, room_ttl).await?;
    let stream = keys.stream(&query.room);
    let (mut after, mut before) = (query.after, query.before);
    let mut page = PageBuilder::new(query);
    let mut chunk = FIRST_CHUNK.min(query.limit.max(1));
    let (mut read, mut read_bytes) = (0usize, 0usize);
    while page.wants_more() {
        let upper = before.map_or("+".to_owned(), exclusive);
        let lower = after.map_or("-".to_owned(), exclusive);
        let mut command = if query.newest_first {
            let mut command = redis::cmd("XREVRANGE");
            command.arg(&stream).arg(upper).arg(lower);
            command
        } else {
            let mut command = redis::cmd("XRANGE");
            command.arg(&stream).arg(lower).arg(upper);
            command
        };
        command.arg("COUNT").arg(chunk);
        let reply: StreamRangeReply = command.query_async(connection).await?;
        let entries = reply.ids.len();
        let Some(edge) = reply.ids.last().and_then(|entry| message_id(&entry.id)) else {
            break;
        };
        match query.newest_first {
            true => before = Some(edge),
            false => after = Some(edge),
        }
        for message in decode(&query.room, reply, max_age) {
            read += 1;
            read_bytes += message.stored_bytes();
            if !page.offer(message) {
                break;
            }
        }
        if entries < chunk {
            break; // The stream has no more in this direction.
        }
        let average = (read_bytes / read.max(1)).max(1);
        chunk = (page.bytes_left() / average).clamp(1, MAX_CHUNK);
    }
    Ok(page.finish(last_id, epoch))
}

/// The room's epoch (made now if the room has none: new, or its keys were lost) and last id.
pub async fn numbering(
    connection: &mut Connection,
    keys: &Keys,
    room: &RoomName,
    room_ttl: Duration,
) -> RedisResult<(Epoch, u64)> {
    let fresh = new_epoch();
    let mut pipeline = redis::pipe();
    pipeline
        .cmd("SET")
        .arg(keys.epoch(room))
        .arg(&*fresh)
        .arg("NX")
        .arg("GET");
    // A room opened and never written to keeps no key past the room TTL.
    if !room_ttl.is_zero() {
        pipeline.arg("PX").arg(room_ttl.as_millis() as u64);
    }
    let (kept, last_id): (Option<String>, Option<u64>) = pipeline
        .cmd("GET")
        .arg(keys.sequence(room))
        .query_async(connection)
        .await?;
    Ok((kept.map_or(fresh, Epoch::from), last_id.unwrap_or(0)))
}

/// KEYS: the room's epoch, its renewal note. ARGV: the epoch to replace, a new one, the room
/// TTL in ms (0: none), the last id kept. Replaces it (noting `OLD:LAST`) unless another node
/// already did; returns the room's epoch.
const RENEW_EPOCH_SCRIPT: &str = r#"
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then return current end
local note = ARGV[1] .. ':' .. ARGV[4]
if ARGV[3] ~= '0' then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  redis.call('SET', KEYS[2], note, 'PX', ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[2])
  redis.call('SET', KEYS[2], note)
end
return ARGV[2]
"#;

/// Where a room's numbering went on when its epoch was renewed from `old`: the last id kept;
/// `None` when it was not renewed from `old` (its keys were lost: ids start again).
pub async fn renewed_from(
    connection: &mut Connection,
    keys: &Keys,
    room: &RoomName,
    old: &Epoch,
) -> RedisResult<Option<u64>> {
    let note: Option<String> = redis::cmd("GET")
        .arg(keys.renewed(room))
        .query_async(connection)
        .await?;
    Ok(note.and_then(|note| {
        let (epoch, last) = note.rsplit_once(':')?;
        (epoch == &**old).then(|| last.parse().ok()).flatten()
    }))
}

static RENEW_EPOCH: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(RENEW_EPOCH_SCRIPT));

/// A new epoch for `room` in place of `old` (the same on every node that asks).
pub async fn renew_epoch(
    connection: &mut Connection,
    keys: &Keys,
    room: &RoomName,
    old: &Epoch,
    room_ttl: Duration,
    stored: u64,
) -> RedisResult<Epoch> {
    let renewed: String = RENEW_EPOCH
        .key(keys.epoch(room))
        .key(keys.renewed(room))
        .arg(&**old)
        .arg(&*new_epoch())
        .arg(room_ttl.as_millis() as u64)
        .arg(stored)
        .invoke_async(connection)
        .await?;
    Ok(Epoch::from(renewed))
}

/// The first `count` messages with `after < id < before` (`before` None: up to the newest),
/// oldest first.
pub async fn range(
    connection: &mut Connection,
    keys: &Keys,
    room: &RoomName,
    after: u64,
    before: Option<u64>,
    count: usize,
) -> RedisResult<Vec<StoredMessage>> {
    let reply: StreamRangeReply = redis::cmd("XRANGE")
        .arg(keys.stream(room))
        .arg(exclusive(after))
        .arg(before.map_or("+".to_owned(), exclusive))
        .arg("COUNT")
        .arg(count)
        .query_async(connection)
        .await?;
    Ok(decode(room, reply, None))
}

fn exclusive(id: u64) -> String {
    format!("({id}-0")
}

fn message_id(stream_id: &str) -> Option<u64> {
    stream_id.split('-').next()?.parse().ok()
}

fn decode(
    room: &RoomName,
    reply: StreamRangeReply,
    max_age: Option<Duration>,
) -> Vec<StoredMessage> {
    let cutoff = max_age.map_or(0, |age| now_ms().saturating_sub(age.as_millis() as u64));
    reply
        .ids
        .into_iter()
        .filter_map(|entry| {
            let id = message_id(&entry.id)?;
            let ts: u64 = entry.get("ts")?;
            let body: String = entry.get("m")?;
            let message = RawValue::from_string(body).ok()?;
            let user = entry
                .get::<String>("u")
                .and_then(|user| Author::from_json(&user));
            let nonce = entry
                .get::<String>("n")
                .and_then(|nonce| serde_json::from_str::<String>(&nonce).ok())
                .and_then(|nonce| Nonce::parse(&nonce).ok());
            (ts >= cutoff).then(|| StoredMessage {
                id,
                room: room.clone(),
                message,
                ts,
                user,
                nonce,
            })
        })
        .collect()
}

/// Most rooms the list of written rooms keeps (it also loses those whose keys expired).
const RECENT_KEPT: isize = 1_000_000;

/// Notes that `rooms` were written at `ts` (ms), keeping the newest `RECENT_KEPT` of those whose
/// keys have not expired (`room_ttl`).
pub async fn note_written(
    connection: &mut Connection,
    keys: &Keys,
    rooms: &[(RoomName, u64)],
    room_ttl: Duration,
) {
    let expired = match room_ttl.is_zero() {
        true => 0,
        false => now_ms().saturating_sub(room_ttl.as_millis() as u64),
    };
    let mut add = redis::cmd("ZADD");
    add.arg(keys.recent());
    for (room, ts) in rooms {
        add.arg(*ts).arg(room.as_str());
    }
    let noted: RedisResult<()> = redis::pipe()
        .add_command(add)
        .ignore()
        .cmd("ZREMRANGEBYRANK")
        .arg(keys.recent())
        .arg(0)
        .arg(-RECENT_KEPT - 1)
        .ignore()
        .cmd("ZREMRANGEBYSCORE")
        .arg(keys.recent())
        .arg("-inf")
        .arg(format!("({expired}"))
        .ignore()
        .query_async(connection)
        .await;
    if let Err(error) = noted {
        tracing::warn!(%error, "cannot note recently written rooms");
    }
}

/// Up to `limit` rooms written lately (within `room_ttl`), the latest first.
pub async fn recent_rooms(
    connection: &mut Connection,
    keys: &Keys,
    limit: usize,
    room_ttl: Duration,
) -> RedisResult<Vec<RecentRoom>> {
    let alive = match room_ttl.is_zero() {
        true => 0,
        false => now_ms().saturating_sub(room_ttl.as_millis() as u64),
    };
    let rooms: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg(keys.recent())
        .arg("+inf")
        .arg(alive)
        .arg("BYSCORE")
        .arg("REV")
        .arg("LIMIT")
        .arg(0)
        .arg(limit)
        .arg("WITHSCORES")
        .query_async(connection)
        .await?;
    Ok(rooms
        .into_iter()
        .filter_map(|(room, ts)| {
            Some(RecentRoom {
                room: RoomName::parse(&room).ok()?,
                ts: ts as u64,
            })
        })
        .collect())
}
