//! `livechat migrate`: copies what the embedded engine's history file holds into Redis (one
//! server or a Cluster), as the Redis engine keeps it (`keys`), so that nodes started on Redis
//! afterwards serve the same history, ids and epochs, and a client resuming with its old id gets
//! exactly what it missed.
//!
//! Per room: its stream of messages (entries `ID-0`), its counter, byte total and epoch; edited
//! and deleted messages in its `changes` hash and `moved` set, every changed message in `changed`
//! with the room's change counter; reactions; nonces still within the dedupe window (expiring
//! when their window ends); the room in the list of written rooms; and each room key's TTL,
//! counted from the migration. Then read positions, direct-message lists, bans and the webhook
//! events not yet delivered.
//!
//! Idempotent and resumable: a room's stream only gains the messages after its newest entry,
//! and everything else is set to what the file holds (not added to), so running it again after
//! an interruption, or twice, ends with the same keys. Presence and node registrations are not
//! copied: nodes make them as they run.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt};
use redis::RedisResult;
use redis::streams::StreamRangeReply;

use super::connection::{Connection, PushQueue, Servers};
use super::keys::Keys;
use super::stream::note_written;
use crate::room::RoomName;
use crate::store::StoreError;
use crate::store::export::{Export, Row};
use crate::store::now_ms;
use crate::tasks::Tasks;

/// Messages sent to Redis in one pipeline.
const CHUNK: usize = 1000;
/// Users' keys written at once.
const USERS_AT_ONCE: usize = 32;

pub struct MigrateSettings {
    pub urls: Vec<String>,
    pub cluster: bool,
    pub prefix: String,
    /// A room's keys expire this long after the migration unless written (zero: never).
    pub room_ttl: Duration,
    /// Nonces stored within it are copied, for what is left of it.
    pub dedupe_window: Duration,
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// How far the migration is.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    pub rooms_done: u64,
    pub rooms: u64,
    pub messages_done: u64,
    /// Messages added to streams by this run (a run after an interruption adds only the rest).
    pub messages_added: u64,
    pub messages: u64,
    pub elapsed: Duration,
}

/// Copies `export` into Redis, telling `progress` after each room.
pub async fn migrate(
    export: &Export,
    settings: &MigrateSettings,
    mut progress: impl FnMut(&Progress),
) -> Result<Progress, MigrateError> {
    let started = Instant::now();
    let (pushes, _pushed) = PushQueue::new(16);
    let servers = Servers::Urls {
        urls: &settings.urls,
        cluster: settings.cluster,
    };
    // The connection's own background work (a cluster's, a reconnect's) ends with the migration.
    let tasks = Tasks::new();
    let migrated = copy_all(export, settings, servers, pushes, &tasks, &mut progress).await;
    tasks.stop_all(settings.timeout).await;
    migrated.map(|mut done| {
        done.elapsed = started.elapsed();
        done
    })
}

/// The migration itself, on a connection whose tasks `tasks` owns.
async fn copy_all(
    export: &Export,
    settings: &MigrateSettings,
    servers: Servers<'_>,
    pushes: PushQueue,
    tasks: &Tasks,
    progress: &mut impl FnMut(&Progress),
) -> Result<Progress, MigrateError> {
    let started = Instant::now();
    let mut connection = Connection::open(servers, settings.timeout, pushes, tasks).await?;
    let keys = Keys::new(&settings.prefix);
    let (epoch, renewed_from) = export.epochs()?;
    let epoch = epoch.unwrap_or_else(|| crate::epoch::new_epoch().to_string());
    let rooms = export.rooms()?;
    let mut done = Progress {
        rooms: rooms.len() as u64,
        messages: export.message_count()?,
        ..Progress::default()
    };
    let since_ms = now_ms().saturating_sub(settings.dedupe_window.as_millis() as u64);
    let mut written = Vec::new();
    for numbering in &rooms {
        // A name this version would refuse is not a room any node could serve.
        let Ok(room) = RoomName::parse(&numbering.room) else {
            tracing::warn!(room = %numbering.room, "not a valid room name: left out");
            continue;
        };
        let copied = copy_room(&mut connection, &keys, export, &room, since_ms).await?;
        let mut finish = redis::pipe();
        finish
            .cmd("SET")
            .arg(keys.epoch(&room))
            .arg(&epoch)
            .ignore()
            .cmd("SET")
            .arg(keys.bytes(&room))
            .arg(copied.bytes)
            .ignore()
            .cmd("SET")
            .arg(keys.change_counter(&room))
            .arg(numbering.changes)
            .ignore();
        if let (Some(old), Some(through)) = (&renewed_from, numbering.renewed_through) {
            finish
                .cmd("SET")
                .arg(keys.renewed(&room))
                .arg(format!("{old}:{through}"))
                .ignore();
        }
        // Last: a room is numbered on Redis once everything before is there.
        finish
            .cmd("SET")
            .arg(keys.sequence(&room))
            .arg(numbering.last_id)
            .ignore();
        if !settings.room_ttl.is_zero() {
            let ttl = settings.room_ttl.as_millis() as u64;
            for key in room_keys(&keys, &room) {
                finish.cmd("PEXPIRE").arg(key).arg(ttl).ignore();
            }
        }
        finish.query_async::<()>(&mut connection).await?;
        if let Some(ts) = copied.newest_ts {
            written.push((room.clone(), ts));
        }
        done.rooms_done += 1;
        done.messages_done += copied.messages;
        done.messages_added += copied.added;
        done.elapsed = started.elapsed();
        progress(&done);
    }
    for rooms in written.chunks(CHUNK) {
        note_written(&mut connection, &keys, rooms, settings.room_ttl).await;
    }
    copy_users(&connection, &keys, export).await?;
    copy_outbox(&mut connection, &keys, export).await?;
    done.elapsed = started.elapsed();
    Ok(done)
}

/// A room's keys that expire together (those the publish and change scripts give the TTL).
fn room_keys(keys: &Keys, room: &RoomName) -> [String; 9] {
    [
        keys.stream(room),
        keys.sequence(room),
        keys.bytes(room),
        keys.epoch(room),
        keys.moved(room),
        keys.changes(room),
        keys.changed(room),
        keys.change_counter(room),
        keys.reacted(room),
    ]
}

/// What was copied of one room.
struct Copied {
    messages: u64,
    added: u64,
    /// Bytes of the messages in the stream, as the publish script counts them.
    bytes: u64,
    newest_ts: Option<u64>,
}

/// Copies a room's messages, changes, reactions and nonces.
async fn copy_room(
    connection: &mut Connection,
    keys: &Keys,
    export: &Export,
    room: &RoomName,
    since_ms: u64,
) -> Result<Copied, MigrateError> {
    let in_stream = newest_entry(connection, &keys.stream(room))
        .await?
        .and_then(|id| id.split('-').next()?.parse::<u64>().ok())
        .unwrap_or(0);
    let mut copied = Copied {
        messages: 0,
        added: 0,
        bytes: 0,
        newest_ts: None,
    };
    let mut after = 0;
    loop {
        let rows = export.messages(room.as_str(), after, CHUNK)?;
        let Some(last) = rows.last() else { break };
        after = last.id;
        let mut pipeline = redis::pipe();
        for row in &rows {
            copied.added += u64::from(add_message(&mut pipeline, keys, room, row, in_stream));
            if !moved(row) {
                copied.bytes += stream_bytes(row);
            }
            copied.newest_ts = Some(row.ts);
        }
        copied.messages += rows.len() as u64;
        if !pipeline.is_empty() {
            pipeline.query_async::<()>(connection).await?;
        }
    }
    // Reactions: what the file holds, in place of what Redis has.
    let reactions = export.reactions(room.as_str())?;
    let mut pipeline = redis::pipe();
    pipeline.cmd("DEL").arg(keys.reacted(room)).ignore();
    for chunk in reactions.chunks(CHUNK) {
        let add = pipeline.cmd("ZADD").arg(keys.reacted(room));
        for (id, emoji, user) in chunk {
            let emoji = serde_json::Value::from(emoji.as_str()).to_string();
            add.arg(*id).arg(format!("{id}\t{emoji}\t{user}"));
        }
        add.ignore();
    }
    for (nonce, id, ts) in export.nonces(room.as_str(), since_ms)? {
        // Remembered for what is left of its window (which began at `since_ms`).
        pipeline
            .cmd("SET")
            .arg(keys.nonce(room, &nonce))
            .arg(format!("{id}:{ts}"))
            .arg("PX")
            .arg(ts.saturating_sub(since_ms).max(1))
            .ignore();
    }
    pipeline.query_async::<()>(connection).await?;
    Ok(copied)
}

/// The id of a stream's newest entry (`None`: no entry).
async fn newest_entry(connection: &mut Connection, stream: &str) -> RedisResult<Option<String>> {
    let newest: StreamRangeReply = redis::cmd("XREVRANGE")
        .arg(stream)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(connection)
        .await?;
    Ok(newest.ids.into_iter().next().map(|entry| entry.id))
}

/// Whether the Redis engine keeps this message out of the stream (edited or deleted: its record
/// is in the room's `changes` hash).
fn moved(row: &Row) -> bool {
    row.deleted || row.edited_ts.is_some()
}

/// A nonce as the stream keeps it: a JSON string.
fn nonce_json(nonce: &str) -> String {
    serde_json::Value::from(nonce).to_string()
}

/// Bytes of a stream entry as the publish script counts them: text, author, nonce.
fn stream_bytes(row: &Row) -> u64 {
    (row.body.len()
        + row.user.as_ref().map_or(0, String::len)
        + row
            .nonce
            .as_deref()
            .map_or(0, |nonce| nonce_json(nonce).len())) as u64
}

/// Adds the commands that store one message as the Redis engine would have: whether it was
/// added to the stream now (it was not there yet).
fn add_message(
    pipeline: &mut redis::Pipeline,
    keys: &Keys,
    room: &RoomName,
    row: &Row,
    in_stream: u64,
) -> bool {
    let id = row.id;
    let entry = format!("{id}-0");
    let field = |name: &str| format!("{id}:{name}");
    let mut added = false;
    if moved(row) {
        // Changed in the file after an earlier run copied it: its old text goes.
        pipeline
            .cmd("XDEL")
            .arg(keys.stream(room))
            .arg(&entry)
            .ignore();
        pipeline
            .cmd("ZADD")
            .arg(keys.moved(room))
            .arg(id)
            .arg(id)
            .ignore();
        let record = pipeline.cmd("HSET").arg(keys.changes(room));
        record.arg(field("t")).arg(row.ts);
        if row.deleted {
            record.arg(field("d")).arg(1);
        } else {
            record.arg(field("m")).arg(&row.body);
            if let Some(edited) = row.edited_ts {
                record.arg(field("e")).arg(edited);
            }
            if let Some(user) = &row.user {
                record.arg(field("u")).arg(user);
            }
            if let Some(nonce) = &row.nonce {
                record.arg(field("n")).arg(nonce_json(nonce));
            }
            if let Some(reply_to) = row.reply_to {
                record.arg(field("r")).arg(reply_to);
            }
        }
        record.ignore();
    } else if id > in_stream {
        let add = pipeline.cmd("XADD").arg(keys.stream(room)).arg(&entry);
        add.arg("ts").arg(row.ts).arg("m").arg(&row.body);
        if let Some(user) = &row.user {
            add.arg("u").arg(user);
        }
        if let Some(nonce) = &row.nonce {
            add.arg("n").arg(nonce_json(nonce));
        }
        if let Some(reply_to) = row.reply_to {
            add.arg("r").arg(reply_to);
        }
        add.ignore();
        added = true;
    }
    if row.change_seq > 0 {
        pipeline
            .cmd("HSET")
            .arg(keys.changes(room))
            .arg(field("s"))
            .arg(row.change_seq)
            .ignore();
        pipeline
            .cmd("ZADD")
            .arg(keys.changed(room))
            .arg(row.changed_after)
            .arg(id)
            .ignore();
    }
    added
}

/// Read positions, direct-message lists and bans: one command per user key, several at once
/// (on a cluster each user's keys are in their own slot).
async fn copy_users(
    connection: &Connection,
    keys: &Keys,
    export: &Export,
) -> Result<(), MigrateError> {
    let mut commands = by_user(
        export.reads()?,
        "HSET",
        |user| keys.reads(user),
        |room, id| [room, id.to_string()],
    );
    commands.extend(by_user(
        export.directs()?,
        "ZADD",
        |user| keys.directs(user),
        // Scored by when each was opened.
        |room, opened| [opened.to_string(), room],
    ));
    let bans = export.bans()?;
    if !bans.is_empty() {
        let mut command = redis::cmd("HSET");
        command.arg(keys.bans());
        for (id, body) in bans {
            command.arg(id).arg(body);
        }
        commands.push(command);
    }
    futures_util::stream::iter(commands)
        .map(|command| {
            let mut connection = connection.clone();
            async move { command.query_async::<()>(&mut connection).await }
        })
        .buffer_unordered(USERS_AT_ONCE)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// One command per user: `command KEY(user) A B ...` with `pair(room, number)` for each of its
/// rows.
fn by_user(
    rows: Vec<(String, String, u64)>,
    command: &str,
    key: impl Fn(&str) -> String,
    pair: impl Fn(String, u64) -> [String; 2],
) -> Vec<redis::Cmd> {
    let mut users: HashMap<String, Vec<(String, u64)>> = HashMap::new();
    for (user, room, number) in rows {
        users.entry(user).or_default().push((room, number));
    }
    users
        .into_iter()
        .map(|(user, rows)| {
            let mut cmd = redis::cmd(command);
            cmd.arg(key(&user));
            for (room, number) in rows {
                cmd.arg(&pair(room, number));
            }
            cmd
        })
        .collect()
}

/// The webhook events not yet delivered, as entries `0-SEQ` of the Redis outbox (older than any
/// a node adds), with the outbox's byte total; those already copied are not added again.
async fn copy_outbox(
    connection: &mut Connection,
    keys: &Keys,
    export: &Export,
) -> Result<(), MigrateError> {
    let events = export.outbox()?;
    if events.is_empty() {
        return Ok(());
    }
    let newest = newest_entry(connection, &keys.outbox()).await?;
    let copied_through = newest.map_or(Some(0), |id| {
        id.strip_prefix("0-")
            .and_then(|seq| seq.parse::<u64>().ok())
    });
    let Some(copied_through) = copied_through else {
        tracing::warn!("the Redis outbox already holds events of nodes: webhook events not copied");
        return Ok(());
    };
    let bytes: u64 = events.iter().map(|(_, _, body)| body.len() as u64).sum();
    for chunk in events.chunks(CHUNK) {
        let mut pipeline = redis::pipe();
        for (seq, ts, body) in chunk.iter().filter(|(seq, _, _)| *seq > copied_through) {
            pipeline
                .cmd("XADD")
                .arg(keys.outbox())
                .arg(format!("0-{seq}"))
                .arg("t")
                .arg(*ts)
                .arg("e")
                .arg(body)
                .ignore();
        }
        if !pipeline.is_empty() {
            pipeline.query_async::<()>(connection).await?;
        }
    }
    redis::cmd("SET")
        .arg(keys.outbox_bytes())
        .arg(bytes)
        .query_async::<()>(connection)
        .await?;
    Ok(())
}
