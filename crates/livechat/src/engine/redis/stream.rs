//! Reading a room's history stream: pages for `GET /chat/history/`, and ranges to fill gaps.

use std::sync::LazyLock;
use std::time::Duration;

use redis::RedisResult;
use redis::streams::StreamRangeReply;
use serde_json::value::RawValue;

use super::connection::Connection;
use super::keys::Keys;
use crate::epoch::{Epoch, new_epoch};
use std::collections::HashMap;

use crate::message::{Author, Extra, Nonce, ReactionCount, Reactions, StoredMessage};
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
    let mut page = page.finish(last_id, epoch);
    add_moved(connection, keys, query, &mut page).await?;
    add_reactions(
        connection,
        keys,
        &query.room,
        &mut page.messages,
        query.reader.as_deref(),
    )
    .await?;
    Ok(page)
}

/// Adds to a page read from the stream the messages of its range whose records moved out of it
/// (edited, or deleted: tombstones), keeping the page to its limit.
async fn add_moved(
    connection: &mut Connection,
    keys: &Keys,
    query: &HistoryQuery,
    page: &mut Page,
) -> RedisResult<()> {
    let full = page.more || page.messages.len() >= query.limit;
    let (first, last) = (page.messages.first(), page.messages.last());
    let bound = |id: Option<u64>, open: &str| id.map_or(open.to_owned(), |id| format!("({id}"));
    let (lower, upper) = match (query.newest_first, full) {
        (true, true) => (
            bound(first.map(|m| m.id), "-inf"),
            bound(query.before, "+inf"),
        ),
        (true, false) => (bound(query.after, "-inf"), bound(query.before, "+inf")),
        (false, true) => (
            bound(query.after, "-inf"),
            bound(last.map(|m| m.id), "+inf"),
        ),
        (false, false) => (bound(query.after, "-inf"), bound(query.before, "+inf")),
    };
    let mut command = redis::cmd("ZRANGE");
    command.arg(keys.moved(&query.room));
    match query.newest_first {
        true => command.arg(&upper).arg(&lower).arg("BYSCORE").arg("REV"),
        false => command.arg(&lower).arg(&upper).arg("BYSCORE"),
    };
    let ids: Vec<u64> = command
        .arg("LIMIT")
        .arg(0)
        .arg(query.limit)
        .query_async(connection)
        .await?;
    if ids.is_empty() {
        return Ok(());
    }
    let moved = moved_records(connection, keys, &query.room, &ids).await?;
    page.messages.extend(moved.into_iter().flatten());
    page.messages.sort_by_key(|message| message.id);
    page.messages.dedup_by_key(|message| message.id);
    if page.messages.len() > query.limit {
        let over = page.messages.len() - query.limit;
        match query.newest_first {
            true => drop(page.messages.drain(..over)),
            false => page.messages.truncate(query.limit),
        }
        page.more = true;
    }
    Ok(())
}

/// The records of messages that moved out of the stream (`None`: not there either).
async fn moved_records(
    connection: &mut Connection,
    keys: &Keys,
    room: &RoomName,
    ids: &[u64],
) -> RedisResult<Vec<Option<StoredMessage>>> {
    const FIELDS: [&str; 7] = ["m", "t", "u", "n", "r", "e", "d"];
    let mut pipeline = redis::pipe();
    for id in ids {
        let command = pipeline.cmd("HMGET").arg(keys.changes(room));
        for field in FIELDS {
            command.arg(format!("{id}:{field}"));
        }
    }
    let records: Vec<[Option<String>; 7]> = pipeline.query_async(connection).await?;
    Ok(ids
        .iter()
        .zip(records)
        .map(|(id, [body, ts, user, nonce, reply_to, edited, deleted])| {
            let ts: u64 = ts?.parse().ok()?;
            let number = |text: Option<String>| text.and_then(|text| text.parse::<u64>().ok());
            let deleted = deleted.is_some();
            let message = match (&body, deleted) {
                (Some(body), false) => RawValue::from_string(body.clone()).ok()?,
                _ => RawValue::from_string("null".into()).ok()?,
            };
            let extra = Extra {
                reply_to: number(reply_to).filter(|_| !deleted),
                edited_ts: number(edited).filter(|_| !deleted),
                deleted,
                reactions: None,
            };
            Some(StoredMessage {
                id: *id,
                room: room.clone(),
                message,
                ts,
                user: user
                    .filter(|_| !deleted)
                    .and_then(|user| Author::from_json(&user)),
                nonce: nonce
                    .filter(|_| !deleted)
                    .and_then(|nonce| serde_json::from_str::<String>(&nonce).ok())
                    .and_then(|nonce| Nonce::parse(&nonce).ok()),
                extra: (extra != Extra::default()).then(|| Box::new(extra)),
            })
        })
        .collect())
}

/// Fills in the reactions of `messages` (oldest first, one room), with `me` for `reader`.
async fn add_reactions(
    connection: &mut Connection,
    keys: &Keys,
    room: &RoomName,
    messages: &mut [StoredMessage],
    reader: Option<&str>,
) -> RedisResult<()> {
    let (Some(first), Some(last)) = (
        messages.iter().map(|m| m.id).min(),
        messages.iter().map(|m| m.id).max(),
    ) else {
        return Ok(());
    };
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(keys.reacted(room))
        .arg(first)
        .arg(last)
        .arg("BYSCORE")
        .query_async(connection)
        .await?;
    if members.is_empty() {
        return Ok(());
    }
    let mut by_id: HashMap<u64, Reactions> = HashMap::new();
    for member in &members {
        let mut parts = member.splitn(3, '\t');
        let (Some(id), Some(emoji), Some(user)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let (Ok(id), Ok(emoji)) = (id.parse::<u64>(), serde_json::from_str::<String>(emoji)) else {
            continue;
        };
        let count = by_id
            .entry(id)
            .or_default()
            .entry(emoji)
            .or_insert(ReactionCount {
                count: 0,
                me: false,
            });
        count.count += 1;
        count.me |= reader == Some(user);
    }
    for message in messages {
        if let Some(reactions) = by_id.remove(&message.id)
            && !message.is_deleted()
        {
            message.extra_mut().reactions = Some(reactions);
        }
    }
    Ok(())
}

/// The messages of `room` up to `through` changed since `through` was its last id, as they are
/// now, in the order of their changes (at most `limit`).
pub async fn changed_since(
    connection: &mut Connection,
    keys: &Keys,
    room: &RoomName,
    through: u64,
    reader: Option<&str>,
    limit: usize,
) -> RedisResult<Vec<StoredMessage>> {
    if through == 0 {
        return Ok(Vec::new());
    }
    // Changed after `through` was the last id: some of them are newer messages, left out.
    let mut ids = Vec::new();
    let mut offset = 0;
    while ids.len() < limit {
        let read: Vec<u64> = redis::cmd("ZRANGE")
            .arg(keys.changed(room))
            .arg(through)
            .arg("+inf")
            .arg("BYSCORE")
            .arg("LIMIT")
            .arg(offset)
            .arg(limit)
            .query_async(connection)
            .await?;
        offset += read.len();
        let exhausted = read.len() < limit;
        ids.extend(read.into_iter().filter(|id| *id <= through));
        if exhausted {
            break;
        }
    }
    ids.truncate(limit);
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipeline = redis::pipe();
    for id in &ids {
        pipeline
            .cmd("HGET")
            .arg(keys.changes(room))
            .arg(format!("{id}:s"));
        pipeline
            .cmd("XRANGE")
            .arg(keys.stream(room))
            .arg(format!("{id}-0"))
            .arg(format!("{id}-0"));
    }
    let answers: Vec<redis::Value> = pipeline.query_async(connection).await?;
    let moved = moved_records(connection, keys, room, &ids).await?;
    let mut changed = Vec::new();
    for ((id, pair), moved) in ids.iter().zip(answers.chunks(2)).zip(moved) {
        let seq: u64 = redis::from_redis_value_ref::<Option<String>>(&pair[0])
            .ok()
            .flatten()
            .and_then(|seq| seq.parse().ok())
            .unwrap_or(0);
        let in_stream = redis::from_redis_value_ref::<StreamRangeReply>(&pair[1])
            .ok()
            .and_then(|reply| decode(room, reply, None).into_iter().next());
        if let Some(message) = moved.or(in_stream).filter(|message| message.id == *id) {
            changed.push((seq, message));
        }
    }
    changed.sort_by_key(|(seq, _)| *seq);
    let mut changed: Vec<StoredMessage> = changed.into_iter().map(|(_, message)| message).collect();
    add_reactions(connection, keys, room, &mut changed, reader).await?;
    Ok(changed)
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
                extra: Extra::replying(entry.get::<u64>("r")),
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
