//! What moderation keeps on Redis: the bans (one hash, ban id -> JSON), and what it reads of
//! rooms: their stored size, and a user's messages found by scanning the rooms' streams. Also
//! each user's list of direct-message rooms (a sorted set by when each was opened).

use redis::RedisResult;

use super::connection::Connection;
use super::keys::Keys;
use super::stream;
use crate::epoch::Epoch;
use crate::moderation::Ban;
use crate::room::RoomName;
use crate::store::{Authored, MAX_DIRECTS, Place, RoomStats, now_ms};

pub async fn bans(connection: &mut Connection, keys: &Keys) -> RedisResult<Vec<Ban>> {
    let stored: Vec<String> = redis::cmd("HVALS")
        .arg(keys.bans())
        .query_async(connection)
        .await?;
    Ok(stored
        .iter()
        .filter_map(|json| match serde_json::from_str::<Ban>(json) {
            Ok(ban) => Some(ban),
            Err(error) => {
                tracing::warn!(%error, "a stored ban cannot be read; it is ignored");
                None
            }
        })
        .collect())
}

/// Keeps `ban`, whose JSON is `json`.
pub async fn put_ban(
    connection: &mut Connection,
    keys: &Keys,
    ban: &Ban,
    json: String,
) -> RedisResult<()> {
    redis::cmd("HSET")
        .arg(keys.bans())
        .arg(&ban.id)
        .arg(json)
        .query_async(connection)
        .await
}

pub async fn remove_ban(connection: &mut Connection, keys: &Keys, id: &str) -> RedisResult<bool> {
    let removed: u64 = redis::cmd("HDEL")
        .arg(keys.bans())
        .arg(id)
        .query_async(connection)
        .await?;
    Ok(removed > 0)
}

/// The room's stored messages, their bytes, last id and epoch (all keys share the room's slot).
pub async fn room_stats(
    connection: &mut Connection,
    keys: &Keys,
    room: &RoomName,
) -> RedisResult<(RoomStats, Option<Epoch>)> {
    let (messages, bytes, last_id, epoch): (u64, Option<u64>, Option<u64>, Option<String>) =
        redis::pipe()
            .cmd("XLEN")
            .arg(keys.stream(room))
            .cmd("GET")
            .arg(keys.bytes(room))
            .cmd("GET")
            .arg(keys.sequence(room))
            .cmd("GET")
            .arg(keys.epoch(room))
            .query_async(connection)
            .await?;
    let stats = RoomStats {
        messages,
        bytes: bytes.unwrap_or(0),
        last_id: last_id.unwrap_or(0),
    };
    Ok((stats, epoch.map(Epoch::from)))
}

/// Messages of `user` among the next `limit` stored after `from`, rooms in name order (the
/// rooms written within the room TTL, as the room list knows them).
pub async fn authored(
    connection: &mut Connection,
    keys: &Keys,
    user: &str,
    from: Option<Place>,
    limit: usize,
) -> RedisResult<Authored> {
    let mut rooms: Vec<String> = redis::cmd("ZRANGE")
        .arg(keys.recent())
        .arg(0)
        .arg(-1)
        .query_async(connection)
        .await?;
    rooms.sort_unstable();
    let mut authored = Authored::default();
    let start = from.as_ref().map_or(0, |place| {
        rooms.partition_point(|room| room.as_str() < place.room.as_str())
    });
    for room in &rooms[start..] {
        let Ok(room) = RoomName::parse(room) else {
            continue;
        };
        let mut after = match &from {
            Some(place) if place.room == room => place.id,
            _ => 0,
        };
        loop {
            let wanted = limit - authored.scanned as usize;
            let messages = stream::range(connection, keys, &room, after, None, wanted).await?;
            authored.scanned += messages.len() as u64;
            let Some(last) = messages.last() else { break };
            after = last.id;
            authored.found.extend(
                messages
                    .iter()
                    .filter(|message| message.user.as_ref().is_some_and(|a| a.is(user)))
                    .map(|message| Place {
                        room: room.clone(),
                        id: message.id,
                    }),
            );
            if authored.scanned as usize == limit {
                authored.next = Some(Place {
                    room: room.clone(),
                    id: after,
                });
                return Ok(authored);
            }
            if messages.len() < wanted {
                break;
            }
        }
    }
    Ok(authored)
}

/// Notes a direct-message room in both its users' lists (each in its own slot).
pub async fn open_direct(
    connection: &mut Connection,
    keys: &Keys,
    room: &RoomName,
) -> RedisResult<()> {
    let Some((a, b)) = room.direct_users() else {
        return Ok(());
    };
    for user in [a, b] {
        let key = keys.directs(user);
        redis::pipe()
            .cmd("ZADD")
            .arg(&key)
            .arg(now_ms())
            .arg(room.as_str())
            .ignore()
            .cmd("ZREMRANGEBYRANK")
            .arg(&key)
            .arg(0)
            .arg(-(MAX_DIRECTS as isize) - 1)
            .ignore()
            .query_async::<()>(connection)
            .await?;
    }
    Ok(())
}

/// A user's direct-message rooms, the latest opened first.
pub async fn directs(
    connection: &mut Connection,
    keys: &Keys,
    user: &str,
) -> RedisResult<Vec<RoomName>> {
    let rooms: Vec<String> = redis::cmd("ZRANGE")
        .arg(keys.directs(user))
        .arg(0)
        .arg(-1)
        .arg("REV")
        .query_async(connection)
        .await?;
    Ok(rooms
        .iter()
        .filter_map(|room| RoomName::parse(room).ok())
        .collect())
}
