//! History in a SQLite file (`history.sqlite3` in the data directory), in WAL mode.
//!
//! One connection writes, used only by the engine's writer thread, which hands it whole batches:
//! one transaction and one commit (one fsync with `synchronous=FULL`) per batch. Readers use their
//! own connections, which WAL lets run beside the writer; at most `MAX_POOLED_READERS` are kept.
//! Each room's row in `rooms` keeps its last id and the bytes of its stored messages, so that
//! retention by count and by bytes trims the oldest messages in the same transaction. `nonces`
//! remembers the nonces of the dedupe window apart from the messages, so that retention does not
//! shorten the window; `meta` keeps the file's epoch, made when the file is. `webhook_outbox`
//! holds events for the app until it has them (a message's event written in the message's
//! transaction); its sequence never reuses a number, so an event's id (`EPOCH-SEQ`) is unique.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde_json::value::RawValue;

use super::{
    Appended, Authored, HistoryQuery, HistoryStore, MAX_DIRECTS, Page, PageBuilder, Place,
    ReadPosition, RecentRoom, Refused, Retention, RoomStats, StoreError, now_ms,
};
use crate::change::{
    Change, ChangeKind, ChangeRefused, Changed, MAX_EMOJI_PER_MESSAGE, may_change,
};
use crate::config::SqliteSync;
use crate::epoch::{Epoch, new_epoch};
use crate::message::{Author, Draft, Extra, Nonce, ReactionCount, Reactions, StoredMessage};
use crate::moderation::Ban;
use crate::presence::user_key;
use crate::room::RoomName;
use crate::webhooks::{Budget, Event, EventKind, Recorded, WebhookSettings};

const FILE_NAME: &str = "history.sqlite3";
/// The `meta` key of the epoch a restored file's numbering went on from.
pub(super) const RENEWED_FROM: &str = "renewed_from";

/// Read connections kept open between reads.
const MAX_POOLED_READERS: usize = 8;
/// Rooms whose last id the writer keeps in memory; past it the cache starts again (the `rooms`
/// table has every id).
const MAX_CACHED_ROOMS: usize = 10_000;
/// The columns `read_message` reads, in its order.
const MESSAGE_COLUMNS: &str = "id, ts, body, user, nonce, reply_to, edited_ts, deleted";
/// What a stored message counts for in bytes, in SQL (as `StoredMessage::stored_bytes`).
const MESSAGE_BYTES: &str =
    "octet_length(body) + coalesce(octet_length(user), 0) + coalesce(octet_length(nonce), 0)";

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS rooms (
        room    TEXT PRIMARY KEY,
        last_id INTEGER NOT NULL,
        bytes   INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS messages (
        room TEXT    NOT NULL,
        id   INTEGER NOT NULL,
        ts   INTEGER NOT NULL,
        body TEXT    NOT NULL,
        user TEXT,
        nonce TEXT,
        PRIMARY KEY (room, id)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS nonces (
        room  TEXT    NOT NULL,
        nonce TEXT    NOT NULL,
        id    INTEGER NOT NULL,
        ts    INTEGER NOT NULL,
        PRIMARY KEY (room, nonce)
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS nonces_by_ts ON nonces (ts);
    CREATE TABLE IF NOT EXISTS meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS reactions (
        room  TEXT    NOT NULL,
        id    INTEGER NOT NULL,
        emoji TEXT    NOT NULL,
        user  TEXT    NOT NULL,
        PRIMARY KEY (room, id, emoji, user)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS reads (
        user TEXT    NOT NULL,
        room TEXT    NOT NULL,
        id   INTEGER NOT NULL,
        PRIMARY KEY (user, room)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS directs (
        user   TEXT    NOT NULL,
        room   TEXT    NOT NULL,
        opened INTEGER NOT NULL,
        PRIMARY KEY (user, room)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS bans (
        id   TEXT PRIMARY KEY,
        body TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS webhook_outbox (
        seq  INTEGER PRIMARY KEY AUTOINCREMENT,
        ts   INTEGER NOT NULL,
        body TEXT    NOT NULL
    );
";

/// Resuming clients read the messages changed in a room since a point.
const CHANGE_INDEX: &str = "CREATE INDEX IF NOT EXISTS messages_by_change ON messages (room, change_seq) WHERE change_seq > 0";

/// Only age retention reads messages by time; without it the index would only slow every commit
/// (measured: 31.7 k -> 37-41 k stored messages/s over HTTP without it).
const TIME_INDEX: &str = "CREATE INDEX IF NOT EXISTS messages_by_ts ON messages (ts)";
const NO_TIME_INDEX: &str = "DROP INDEX IF EXISTS messages_by_ts";

pub struct SqliteStore {
    writer: Mutex<Writer>,
    readers: Mutex<Vec<Connection>>,
    path: PathBuf,
    max_count: u64,
    max_bytes: u64,
    dedupe_window_ms: u64,
    epoch: Epoch,
    /// The epoch of the backup this file was restored from (its rooms' last ids then are in
    /// `rooms.renewed_through`).
    renewed_from: Option<Epoch>,
    /// The webhook outbox, when events are recorded, and which kinds.
    outbox: Option<(WebhookSettings, Budget)>,
}

struct Writer {
    connection: Connection,
    /// The last id given in recently written rooms; the `rooms` table keeps it across restarts,
    /// so ids keep growing even after retention deleted every message of a room.
    last_ids: HashMap<RoomName, u64>,
}

impl SqliteStore {
    pub fn open(
        data_dir: &Path,
        retention: Retention,
        sync: SqliteSync,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|error| StoreError::DataDir {
            path: data_dir.display().to_string(),
            error,
        })?;
        let path = history_file(data_dir);
        let connection = open_checked(&path)?;
        let synchronous = match sync {
            SqliteSync::Full => "FULL",
            SqliteSync::Normal => "NORMAL",
        };
        connection.pragma_update(None, "synchronous", synchronous)?;
        upgrade(&connection)?;
        let epoch = file_epoch(&connection)?;
        let renewed_from = connection
            .query_row(
                "SELECT value FROM meta WHERE key = ?1",
                [RENEWED_FROM],
                |row| row.get::<_, String>(0),
            )
            .optional()?
            .map(Epoch::from);
        connection.execute_batch(match retention.max_age {
            Some(_) => TIME_INDEX,
            None => NO_TIME_INDEX,
        })?;
        Ok(Self {
            writer: Mutex::new(Writer {
                connection,
                last_ids: HashMap::new(),
            }),
            readers: Mutex::default(),
            path,
            max_count: retention.max_count,
            max_bytes: retention.max_bytes,
            dedupe_window_ms: retention.dedupe_window.as_millis() as u64,
            epoch,
            renewed_from,
            outbox: None,
        })
    }

    /// Records webhook events from now on, within `settings`' bounds (counting what the file
    /// already holds).
    pub fn with_outbox(mut self, settings: WebhookSettings) -> Result<Self, StoreError> {
        let (bytes, events): (i64, i64) = self.writer().connection.query_row(
            "SELECT coalesce(sum(length(body)), 0), count(*) FROM webhook_outbox",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        let budget = Budget::new(settings.max_bytes, bytes as u64, events as u64);
        self.outbox = Some((settings, budget));
        Ok(self)
    }

    /// The webhook events of a change, if the outbox takes them (edits and deletions).
    fn change_events(&self, changed: &Changed, now: u64) -> Vec<Event> {
        let Some((settings, budget)) = &self.outbox else {
            return Vec::new();
        };
        Event::of_change(changed, now)
            .filter(|(kind, event)| {
                settings.wants(*kind) && budget.fits(event.body.len() as u64, 0)
            })
            .map(|(_, event)| event)
            .into_iter()
            .collect()
    }

    /// The message events of `appended` that the outbox takes, with their total size.
    fn message_events(&self, appended: &[Appended]) -> (Vec<Event>, u64) {
        let Some((settings, budget)) = &self.outbox else {
            return (Vec::new(), 0);
        };
        if !settings.wants(EventKind::Message) {
            return (Vec::new(), 0);
        }
        let mut events = Vec::new();
        let mut bytes = 0;
        for appended in appended {
            if let Appended::Stored(message) = appended {
                let event = Event::message(message);
                let size = event.body.len() as u64;
                if budget.fits(size, bytes) {
                    bytes += size;
                    events.push(event);
                }
            }
        }
        (events, bytes)
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        self.writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn readers(&self) -> MutexGuard<'_, Vec<Connection>> {
        self.readers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `read` on a pooled read-only connection, opening one if none is free.
    fn with_reader<T>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pooled = self.readers().pop();
        let connection = match pooled {
            Some(connection) => connection,
            None => {
                let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
                let connection = Connection::open_with_flags(&self.path, flags)?;
                connection.busy_timeout(std::time::Duration::from_secs(5))?;
                connection
            }
        };
        let result = read(&connection);
        let mut pool = self.readers();
        if pool.len() < MAX_POOLED_READERS {
            pool.push(connection);
        }
        result
    }
}

/// Makes the tables, columns and indexes this version uses, where the file lacks them.
pub(super) fn upgrade(connection: &Connection) -> Result<(), StoreError> {
    connection.execute_batch(SCHEMA)?;
    add_columns(connection)?;
    connection.execute_batch(CHANGE_INDEX)?;
    Ok(())
}

/// History files from before messages had authors, nonces or byte retention lack those columns;
/// they gain them (empty, and the byte totals filled from the messages they hold).
fn add_columns(connection: &Connection) -> Result<(), StoreError> {
    let has_column = |table: &str, column: &str| {
        connection
            .prepare("SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2")?
            .exists([table, column])
    };
    if !has_column("messages", "user")? {
        connection.execute_batch("ALTER TABLE messages ADD COLUMN user TEXT")?;
    }
    if !has_column("messages", "nonce")? {
        connection.execute_batch("ALTER TABLE messages ADD COLUMN nonce TEXT")?;
    }
    for (table, column, definition) in [
        ("messages", "reply_to", "INTEGER"),
        ("messages", "edited_ts", "INTEGER"),
        ("messages", "deleted", "INTEGER NOT NULL DEFAULT 0"),
        // At its last change: the room's last id then, and the room's change counter.
        ("messages", "changed_after", "INTEGER NOT NULL DEFAULT 0"),
        ("messages", "change_seq", "INTEGER NOT NULL DEFAULT 0"),
        ("rooms", "changes", "INTEGER NOT NULL DEFAULT 0"),
        // Set by a restore: the room's last id in the backup (see `RENEWED_FROM`).
        ("rooms", "renewed_through", "INTEGER"),
    ] {
        if !has_column(table, column)? {
            connection.execute_batch(&format!(
                "ALTER TABLE {table} ADD COLUMN {column} {definition}"
            ))?;
        }
    }
    if !has_column("rooms", "bytes")? {
        connection.execute_batch(&format!(
            "ALTER TABLE rooms ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;
             UPDATE rooms SET bytes = (SELECT coalesce(sum({MESSAGE_BYTES}), 0)
                                       FROM messages WHERE messages.room = rooms.room);"
        ))?;
    }
    Ok(())
}

/// The history file in `data_dir`.
pub fn history_file(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE_NAME)
}

/// Opens the history file at `path` (made if missing) for writing, in WAL mode, after checking
/// that it is livechat's, intact and writable: a file that is not is refused with what to do,
/// never replaced by an empty history.
fn open_checked(path: &Path) -> Result<Connection, StoreError> {
    let unusable = |problem: String| StoreError::Unusable {
        path: path.display().to_string(),
        problem,
    };
    let connection = Connection::open(path).map_err(|error| unusable(problem_of(&error)))?;
    connection.busy_timeout(Duration::from_secs(5))?;
    check_file(&connection).map_err(unusable)?;
    // A file system mounted read-only still opens, read-only.
    if connection.is_readonly(rusqlite::MAIN_DB)? {
        return Err(unusable(problem_of(&rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_READONLY),
            Some("opened read-only".into()),
        ))));
    }
    // Taking the write lock once tells a file another process holds.
    connection
        .pragma_update(None, "journal_mode", "WAL")
        .and_then(|()| connection.execute_batch("BEGIN IMMEDIATE; COMMIT"))
        .map_err(|error| unusable(problem_of(&error)))?;
    Ok(connection)
}

/// Whether the open file is livechat's history (or empty: a new one) and intact; what is wrong
/// with it, and what to do, when not. Reads the whole file (`PRAGMA quick_check`).
pub fn check_file(connection: &Connection) -> Result<(), String> {
    let tables: Vec<String> = connection
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .and_then(|mut statement| {
            statement
                .query_map([], |row| row.get(0))?
                .collect::<Result<_, _>>()
        })
        .map_err(|error| problem_of(&error))?;
    let has = |table: &str| tables.iter().any(|name| name == table);
    let livechats = tables.is_empty() || (has("messages") && has("rooms"));
    if !livechats {
        return Err(format!(
            "a SQLite database, but not livechat's history (its tables: {}); livechat does not \
             write into it: set LIVECHAT_DATA_DIR to the directory of livechat's history, or move \
             the file away to start an empty one",
            tables.join(", ")
        ));
    }
    let verdict: String = connection
        .query_row("PRAGMA quick_check(1)", [], |row| row.get(0))
        .map_err(|error| problem_of(&error))?;
    if verdict != "ok" {
        // SQLite's report spans lines; the error is one.
        return Err(corrupt(
            &verdict.split_whitespace().collect::<Vec<_>>().join(" "),
        ));
    }
    Ok(())
}

fn corrupt(detail: &str) -> String {
    format!(
        "the history file is corrupt ({detail}); livechat does not start on it: restore the \
         latest backup into a fresh data directory (livechat restore --from FILE), or move the \
         file away to start an empty history"
    )
}

/// What an error opening or checking the history file means for its operator.
fn problem_of(error: &rusqlite::Error) -> String {
    use rusqlite::ErrorCode;
    let code = match error {
        rusqlite::Error::SqliteFailure(failure, _) => Some(failure.code),
        _ => None,
    };
    match code {
        Some(ErrorCode::NotADatabase) => format!(
            "not a SQLite database ({error}); livechat does not replace it with an empty history: \
             set LIVECHAT_DATA_DIR to the directory of livechat's history, or move the file away"
        ),
        Some(ErrorCode::DatabaseCorrupt) => corrupt(&error.to_string()),
        Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => {
            format!(
                "cannot be opened for writing ({error}): make the data directory and the file \
                 writable by this user on a file system mounted read-write, or set \
                 LIVECHAT_DATA_DIR to a writable directory"
            )
        }
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => format!(
            "locked by another process ({error}): is another livechat running on this data \
             directory? Stop it, or give this one its own LIVECHAT_DATA_DIR"
        ),
        Some(ErrorCode::DiskFull) => format!(
            "the disk is full ({error}): free space on the file system of the data directory"
        ),
        _ => format!("cannot be used ({error})"),
    }
}

/// The file's epoch, made when the file is first opened (a file from before epochs gets one then:
/// its clients resuming without an epoch are judged by ids alone).
fn file_epoch(connection: &Connection) -> Result<Epoch, StoreError> {
    connection
        .prepare("INSERT INTO meta (key, value) VALUES ('epoch', ?1) ON CONFLICT DO NOTHING")?
        .execute([&*new_epoch()])?;
    let epoch: String =
        connection.query_row("SELECT value FROM meta WHERE key = 'epoch'", [], |row| {
            row.get(0)
        })?;
    Ok(Epoch::from(epoch))
}

/// The last id given in `room` (0: none yet), as the `rooms` table has it.
fn stored_last_id(connection: &Connection, room: &RoomName) -> Result<u64, StoreError> {
    let id = connection
        .prepare_cached("SELECT last_id FROM rooms WHERE room = ?1")?
        .query_row([room.as_str()], |row| row.get::<_, i64>(0));
    match id {
        Ok(id) => Ok(id as u64),
        Err(rusqlite::Error::QueryReturnedNoRows) => Ok(0),
        Err(error) => Err(error.into()),
    }
}

/// A stored message from a row of `MESSAGE_COLUMNS`.
fn read_message(room: &RoomName, row: &rusqlite::Row<'_>) -> Result<StoredMessage, StoreError> {
    let id = row.get::<_, i64>(0)? as u64;
    let message =
        RawValue::from_string(row.get::<_, String>(2)?).map_err(|_| StoreError::Corrupt {
            room: room.clone(),
            id,
        })?;
    let user = row.get::<_, Option<String>>(3)?;
    let nonce = row.get::<_, Option<String>>(4)?;
    let extra = Extra {
        reply_to: row.get::<_, Option<i64>>(5)?.map(|id| id as u64),
        edited_ts: row.get::<_, Option<i64>>(6)?.map(|ts| ts as u64),
        deleted: row.get::<_, i64>(7)? != 0,
        reactions: None,
    };
    Ok(StoredMessage {
        id,
        room: room.clone(),
        message,
        ts: row.get::<_, i64>(1)? as u64,
        user: user.as_deref().and_then(Author::from_json),
        nonce: nonce.and_then(|nonce| Nonce::parse(&nonce).ok()),
        extra: (extra != Extra::default()).then(|| Box::new(extra)),
    })
}

/// Fills in the reactions of `messages` (all of one room), with `me` for `reader`.
fn add_reactions(
    connection: &Connection,
    room: &RoomName,
    messages: &mut [StoredMessage],
    reader: Option<&str>,
) -> Result<(), StoreError> {
    let (Some(first), Some(last)) = (
        messages.iter().map(|m| m.id).min(),
        messages.iter().map(|m| m.id).max(),
    ) else {
        return Ok(());
    };
    let mut statement = connection.prepare_cached(
        "SELECT id, emoji, count(*), max(user = ?4) FROM reactions
         WHERE room = ?1 AND id BETWEEN ?2 AND ?3 GROUP BY id, emoji",
    )?;
    let mut rows = statement.query(params![
        room.as_str(),
        first as i64,
        last as i64,
        reader.unwrap_or("")
    ])?;
    let mut by_id: HashMap<u64, Reactions> = HashMap::new();
    while let Some(row) = rows.next()? {
        let id = row.get::<_, i64>(0)? as u64;
        let count = ReactionCount {
            count: row.get::<_, i64>(2)? as u64,
            me: reader.is_some() && row.get::<_, i64>(3)? != 0,
        };
        by_id.entry(id).or_default().insert(row.get(1)?, count);
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

impl Writer {
    /// Whether `room` holds message `id` (deleted or not).
    fn holds(&self, room: &RoomName, id: u64) -> Result<bool, StoreError> {
        Ok(self
            .connection
            .prepare_cached("SELECT 1 FROM messages WHERE room = ?1 AND id = ?2")?
            .exists(params![room.as_str(), id as i64])?)
    }

    /// The message first stored in `draft`'s room with its nonce at or after `since_ms`.
    fn original(&self, draft: &Draft, since_ms: u64) -> Result<Option<StoredMessage>, StoreError> {
        let Some(nonce) = &draft.nonce else {
            return Ok(None);
        };
        let room = draft.room.as_str();
        let seen = self
            .connection
            .prepare_cached(
                "SELECT id, ts FROM nonces WHERE room = ?1 AND nonce = ?2 AND ts >= ?3",
            )?
            .query_row(params![room, nonce.as_str(), since_ms as i64], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?))
            });
        let (id, ts) = match seen {
            Ok(seen) => seen,
            Err(rusqlite::Error::QueryReturnedNoRows) => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        let mut statement = self.connection.prepare_cached(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE room = ?1 AND id = ?2"
        ))?;
        let mut rows = statement.query(params![room, id])?;
        if let Some(row) = rows.next()? {
            return read_message(&draft.room, row).map(Some);
        }
        // Retention took the message; its nonce is still answered, with the draft's content.
        Ok(Some(StoredMessage {
            id: id as u64,
            room: draft.room.clone(),
            message: draft.message.clone(),
            ts: ts as u64,
            user: draft.user.clone(),
            nonce: draft.nonce.clone(),
            extra: Extra::replying(draft.reply_to),
        }))
    }

    fn last_id(&mut self, room: &RoomName) -> Result<u64, StoreError> {
        if let Some(id) = self.last_ids.get(room) {
            return Ok(*id);
        }
        let id = stored_last_id(&self.connection, room)?;
        if self.last_ids.len() >= MAX_CACHED_ROOMS {
            self.last_ids.clear();
        }
        self.last_ids.insert(room.clone(), id);
        Ok(id)
    }

    /// Deletes a room's oldest messages while it holds more than `max_count` messages or
    /// `max_bytes` bytes, keeping its newest message whatever its size.
    fn trim(
        transaction: &rusqlite::Transaction<'_>,
        room: &RoomName,
        last_id: u64,
        max_count: u64,
        max_bytes: u64,
    ) -> Result<(), StoreError> {
        let mut cut = last_id.saturating_sub(max_count);
        let bytes: i64 = transaction
            .prepare_cached("SELECT bytes FROM rooms WHERE room = ?1")?
            .query_row([room.as_str()], |row| row.get(0))?;
        let mut kept = bytes.max(0) as u64;
        if cut > 0 {
            kept = kept.saturating_sub(Self::bytes_through(transaction, room, cut)?);
        }
        if kept > max_bytes {
            // Walk from the oldest kept message until enough is freed.
            let mut oldest = transaction.prepare_cached(&format!(
                "SELECT id, {MESSAGE_BYTES} FROM messages WHERE room = ?1 AND id > ?2 AND id < ?3
                 ORDER BY id"
            ))?;
            let mut rows = oldest.query(params![room.as_str(), cut as i64, last_id as i64])?;
            while kept > max_bytes {
                let Some(row) = rows.next()? else { break };
                cut = row.get::<_, i64>(0)? as u64;
                kept = kept.saturating_sub(row.get::<_, i64>(1)? as u64);
            }
        }
        if cut > 0 {
            transaction
                .prepare_cached("DELETE FROM messages WHERE room = ?1 AND id <= ?2")?
                .execute(params![room.as_str(), cut as i64])?;
        }
        transaction
            .prepare_cached("UPDATE rooms SET bytes = ?2 WHERE room = ?1")?
            .execute(params![room.as_str(), kept as i64])?;
        Ok(())
    }

    /// Bytes of a room's messages with ids up to `id`.
    fn bytes_through(
        transaction: &rusqlite::Transaction<'_>,
        room: &RoomName,
        id: u64,
    ) -> Result<u64, StoreError> {
        let bytes: i64 = transaction
            .prepare_cached(&format!(
                "SELECT coalesce(sum({MESSAGE_BYTES}), 0) FROM messages WHERE room = ?1 AND id <= ?2"
            ))?
            .query_row(params![room.as_str(), id as i64], |row| row.get(0))?;
        Ok(bytes.max(0) as u64)
    }
}

/// Adds `delta` to a room's bytes of messages.
fn adjust_bytes(
    transaction: &rusqlite::Transaction<'_>,
    room: &str,
    delta: i64,
) -> Result<(), StoreError> {
    transaction
        .prepare_cached("UPDATE rooms SET bytes = max(0, bytes + ?2) WHERE room = ?1")?
        .execute(params![room, delta])?;
    Ok(())
}

/// Adds events to the outbox, in order.
fn insert_events(
    transaction: &rusqlite::Transaction<'_>,
    events: &[Event],
) -> Result<(), StoreError> {
    let mut insert =
        transaction.prepare_cached("INSERT INTO webhook_outbox (ts, body) VALUES (?1, ?2)")?;
    for event in events {
        insert.execute(params![event.ts as i64, event.body])?;
    }
    Ok(())
}

impl HistoryStore for SqliteStore {
    fn append(&self, batch: Vec<Draft>) -> Result<Vec<Appended>, StoreError> {
        let ts = now_ms();
        let since_ms = ts.saturating_sub(self.dedupe_window_ms);
        let mut writer = self.writer();
        // Ids given in this batch; they become the cached last ids only once the commit succeeds.
        let mut batch_ids: HashMap<RoomName, (u64, u64)> = HashMap::new();
        // The first id each room gives in this batch: a reply's target at or after it is new.
        let mut batch_first: HashMap<RoomName, u64> = HashMap::new();
        // Messages stored with a nonce in this batch, by room and nonce.
        let mut batch_nonces: HashMap<(RoomName, Nonce), StoredMessage> = HashMap::new();
        let mut appended = Vec::with_capacity(batch.len());
        for draft in batch {
            if let Some(nonce) = &draft.nonce
                && self.dedupe_window_ms > 0
            {
                let key = (draft.room.clone(), nonce.clone());
                let original = match batch_nonces.get(&key) {
                    Some(first) => Some(first.clone()),
                    None => writer.original(&draft, since_ms)?,
                };
                if let Some(original) = original {
                    appended.push(Appended::Duplicate(original));
                    continue;
                }
            }
            let (id, bytes) = match batch_ids.get(&draft.room) {
                Some((id, bytes)) => (id + 1, *bytes),
                None => (writer.last_id(&draft.room)? + 1, 0),
            };
            if let Some(target) = draft.reply_to {
                let first_new = *batch_first.get(&draft.room).unwrap_or(&id);
                let exists = match target {
                    target if target >= id || target == 0 => false,
                    target if target >= first_new => true,
                    target => writer.holds(&draft.room, target)?,
                };
                if !exists {
                    appended.push(Appended::Refused(Refused::NoReplyTarget(target)));
                    continue;
                }
            }
            batch_first.entry(draft.room.clone()).or_insert(id);
            batch_ids.insert(
                draft.room.clone(),
                (id, bytes + draft.stored_bytes() as u64),
            );
            let message = draft.stored(id, ts);
            if let Some(nonce) = &message.nonce {
                batch_nonces.insert((message.room.clone(), nonce.clone()), message.clone());
            }
            appended.push(Appended::Stored(message));
        }
        let transaction = writer.connection.transaction()?;
        {
            let mut insert = transaction.prepare_cached(
                "INSERT INTO messages (room, id, ts, body, user, nonce, reply_to)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let mut remember = transaction.prepare_cached(
                "INSERT OR REPLACE INTO nonces (room, nonce, id, ts) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for appended in &appended {
                let Appended::Stored(message) = appended else {
                    continue;
                };
                let nonce = message.nonce.as_ref().map(Nonce::as_str);
                insert.execute(params![
                    message.room.as_str(),
                    message.id as i64,
                    ts as i64,
                    message.message.get(),
                    message.user.as_ref().map(|user| user.to_json()),
                    nonce,
                    message.reply_to().map(|id| id as i64),
                ])?;
                if let Some(nonce) = nonce {
                    remember.execute(params![
                        message.room.as_str(),
                        nonce,
                        message.id as i64,
                        ts as i64
                    ])?;
                }
            }
            let mut advance = transaction.prepare_cached(
                "INSERT INTO rooms (room, last_id, bytes) VALUES (?1, ?2, ?3)
                 ON CONFLICT (room) DO UPDATE SET last_id = excluded.last_id,
                                                  bytes = bytes + excluded.bytes",
            )?;
            for (room, (last_id, bytes)) in &batch_ids {
                advance.execute(params![room.as_str(), *last_id as i64, *bytes as i64])?;
                Writer::trim(&transaction, room, *last_id, self.max_count, self.max_bytes)?;
            }
        }
        let (events, event_bytes) = self.message_events(&appended);
        insert_events(&transaction, &events)?;
        transaction.commit()?;
        if let Some((_, budget)) = &self.outbox {
            budget.added(event_bytes, events.len() as u64);
        }
        writer
            .last_ids
            .extend(batch_ids.into_iter().map(|(room, (id, _))| (room, id)));
        Ok(appended)
    }

    fn page(&self, query: &HistoryQuery) -> Result<Page, StoreError> {
        // Without `after`, read the newest matching rows first; the builder turns them around.
        let order = if query.newest_first { "DESC" } else { "ASC" };
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages
             WHERE room = ?1 AND id > ?2 AND id < ?3 ORDER BY id {order} LIMIT ?4"
        );
        let after = query.after.unwrap_or(0).min(i64::MAX as u64) as i64;
        let before = query.before.unwrap_or(u64::MAX).min(i64::MAX as u64) as i64;
        self.with_reader(|connection| {
            // One snapshot for the room's last id and its messages.
            let snapshot = connection.unchecked_transaction()?;
            let last_id = stored_last_id(&snapshot, &query.room)?;
            let mut statement = snapshot.prepare_cached(&sql)?;
            let mut rows = statement.query(params![
                query.room.as_str(),
                after,
                before,
                query.limit as i64
            ])?;
            // Rows are read one at a time and the page stops at its byte cap: a request never
            // holds more than that.
            let mut page = PageBuilder::new(query);
            while let Some(row) = rows.next()? {
                if !page.offer(read_message(&query.room, row)?) {
                    break;
                }
            }
            let mut page = page.finish(last_id, self.epoch.clone());
            if let Some(old) = &self.renewed_from {
                let through: Option<i64> = snapshot
                    .prepare_cached("SELECT renewed_through FROM rooms WHERE room = ?1")?
                    .query_row([query.room.as_str()], |row| row.get(0))
                    .optional()?
                    .flatten();
                page.continues = through.map(|through| (old.clone(), through as u64));
            }
            add_reactions(
                &snapshot,
                &query.room,
                &mut page.messages,
                query.reader.as_deref(),
            )?;
            Ok(page)
        })
    }

    fn prune_older_than(&self, cutoff_ms: u64) -> Result<usize, StoreError> {
        let mut writer = self.writer();
        let transaction = writer.connection.transaction()?;
        // The rooms' byte totals lose what is deleted, in the same transaction.
        transaction
            .prepare_cached(&format!(
                "UPDATE rooms SET bytes = max(0, bytes - (
                     SELECT coalesce(sum({MESSAGE_BYTES}), 0) FROM messages
                     WHERE messages.room = rooms.room AND ts < ?1))
                 WHERE room IN (SELECT DISTINCT room FROM messages WHERE ts < ?1)"
            ))?
            .execute([cutoff_ms as i64])?;
        let pruned = transaction
            .prepare_cached("DELETE FROM messages WHERE ts < ?1")?
            .execute([cutoff_ms as i64])?;
        transaction.commit()?;
        Ok(pruned)
    }

    fn forget_nonces_before(&self, cutoff_ms: u64) -> Result<usize, StoreError> {
        let writer = self.writer();
        let forgotten = writer
            .connection
            .prepare_cached("DELETE FROM nonces WHERE ts < ?1")?
            .execute([cutoff_ms as i64])?;
        Ok(forgotten)
    }

    fn epoch(&self) -> Epoch {
        self.epoch.clone()
    }

    fn recent_rooms(&self, limit: usize) -> Result<Vec<RecentRoom>, StoreError> {
        self.with_reader(|connection| {
            // One lookup by primary key per room: the newest message, if retention kept it.
            let mut statement = connection.prepare_cached(
                "SELECT rooms.room, messages.ts FROM rooms
                 JOIN messages ON messages.room = rooms.room AND messages.id = rooms.last_id
                 ORDER BY messages.ts DESC LIMIT ?1",
            )?;
            let rows = statement.query_map(params![limit as i64], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
            })?;
            let mut rooms = Vec::new();
            for row in rows {
                let (room, ts) = row?;
                if let Ok(room) = RoomName::parse(&room) {
                    rooms.push(RecentRoom {
                        room,
                        ts: ts as u64,
                    });
                }
            }
            Ok(rooms)
        })
    }

    fn change(
        &self,
        change: &Change,
        edit_window: Option<Duration>,
    ) -> Result<Result<Changed, ChangeRefused>, StoreError> {
        let now = now_ms();
        let room = change.room.as_str();
        let id = change.id;
        let mut writer = self.writer();
        let transaction = writer.connection.transaction()?;
        let found = transaction
            .prepare_cached(&format!(
                "SELECT ts, user, deleted, {MESSAGE_BYTES} FROM messages WHERE room = ?1 AND id = ?2"
            ))?
            .query_row(params![room, id as i64], |row| {
                Ok((
                    row.get::<_, i64>(0)? as u64,
                    row.get::<_, Option<String>>(1)?,
                    row.get::<_, i64>(2)? != 0,
                    row.get::<_, i64>(3)?,
                ))
            })
            .optional()?;
        let last_id = stored_last_id(&transaction, &change.room)?;
        let Some((ts, author, deleted, old_bytes)) = found else {
            return Ok(Err(match id {
                id if id == 0 || id > last_id => ChangeRefused::NotFound { id },
                id => ChangeRefused::Gone { id },
            }));
        };
        let author = author.as_deref().and_then(Author::from_json);
        if let Err(refused) = may_change(change, author.as_deref(), deleted, ts, now, edit_window) {
            return Ok(Err(refused));
        }
        let seq: i64 = transaction
            .prepare_cached(
                "UPDATE rooms SET changes = changes + 1 WHERE room = ?1 RETURNING changes",
            )?
            .query_row([room], |row| row.get(0))?;
        let mark = |transaction: &rusqlite::Transaction<'_>| {
            transaction
                .prepare_cached(
                    "UPDATE messages SET changed_after = ?3, change_seq = ?4 WHERE room = ?1 AND id = ?2",
                )?
                .execute(params![room, id as i64, last_id as i64, seq])
        };
        let changed = match &change.kind {
            ChangeKind::Edit(message) => {
                let new_bytes = (message.get().len() as i64)
                    + author
                        .as_ref()
                        .map_or(0, |user| user.to_json().len() as i64);
                transaction
                    .prepare_cached(
                        "UPDATE messages SET body = ?3, edited_ts = ?4 WHERE room = ?1 AND id = ?2",
                    )?
                    .execute(params![room, id as i64, message.get(), now as i64])?;
                adjust_bytes(&transaction, room, new_bytes - old_bytes)?;
                Changed::Edited {
                    room: change.room.clone(),
                    id,
                    message: message.clone(),
                    edited_ts: now,
                    by: change.by.clone(),
                }
            }
            ChangeKind::Delete => {
                // Its text and author are gone from the file, not only hidden.
                transaction
                    .prepare_cached(
                        "UPDATE messages SET body = 'null', user = NULL, nonce = NULL, edited_ts = NULL,
                         deleted = 1 WHERE room = ?1 AND id = ?2",
                    )?
                    .execute(params![room, id as i64])?;
                transaction
                    .prepare_cached("DELETE FROM reactions WHERE room = ?1 AND id = ?2")?
                    .execute(params![room, id as i64])?;
                adjust_bytes(&transaction, room, -old_bytes)?;
                Changed::Deleted {
                    room: change.room.clone(),
                    id,
                    by: change.by.clone(),
                }
            }
            ChangeKind::React { emoji, on } => {
                let user = user_key(&change.by).unwrap_or_default();
                let kinds: i64 = transaction
                    .prepare_cached(
                        "SELECT count(DISTINCT emoji), max(emoji = ?3) FROM reactions WHERE room = ?1 AND id = ?2",
                    )?
                    .query_row(params![room, id as i64, emoji.as_str()], |row| {
                        Ok(row.get::<_, i64>(0)? - row.get::<_, Option<i64>>(1)?.unwrap_or(0))
                    })?;
                if *on && kinds >= MAX_EMOJI_PER_MESSAGE as i64 {
                    return Ok(Err(ChangeRefused::TooManyEmoji { id }));
                }
                let sql = match on {
                    true => {
                        "INSERT OR IGNORE INTO reactions (room, id, emoji, user) VALUES (?1, ?2, ?3, ?4)"
                    }
                    false => {
                        "DELETE FROM reactions WHERE room = ?1 AND id = ?2 AND emoji = ?3 AND user = ?4"
                    }
                };
                transaction.prepare_cached(sql)?.execute(params![
                    room,
                    id as i64,
                    emoji.as_str(),
                    &*user
                ])?;
                let count: i64 = transaction
                    .prepare_cached(
                        "SELECT count(*) FROM reactions WHERE room = ?1 AND id = ?2 AND emoji = ?3",
                    )?
                    .query_row(params![room, id as i64, emoji.as_str()], |row| row.get(0))?;
                Changed::Reacted {
                    room: change.room.clone(),
                    id,
                    emoji: emoji.clone(),
                    user: change.by.clone(),
                    count: count as u64,
                    on: *on,
                }
            }
        };
        mark(&transaction)?;
        let events = self.change_events(&changed, now);
        insert_events(&transaction, &events)?;
        transaction.commit()?;
        if let Some((_, budget)) = &self.outbox {
            budget.added(
                events.iter().map(|e| e.body.len() as u64).sum(),
                events.len() as u64,
            );
        }
        Ok(Ok(changed))
    }

    fn changed_since(
        &self,
        room: &RoomName,
        through: u64,
        reader: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.with_reader(|connection| {
            let snapshot = connection.unchecked_transaction()?;
            let mut statement = snapshot.prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages
                 WHERE room = ?1 AND change_seq > 0 AND changed_after >= ?2 AND id <= ?2
                 ORDER BY change_seq LIMIT ?3"
            ))?;
            let mut rows = statement.query(params![room.as_str(), through as i64, limit as i64])?;
            let mut changed = Vec::new();
            while let Some(row) = rows.next()? {
                changed.push(read_message(room, row)?);
            }
            add_reactions(&snapshot, room, &mut changed, reader)?;
            Ok(changed)
        })
    }

    fn bans(&self) -> Result<Vec<Ban>, StoreError> {
        self.with_reader(|connection| {
            let mut statement = connection.prepare_cached("SELECT body FROM bans")?;
            let rows = statement.query_map([], |row| row.get::<_, String>(0))?;
            let mut bans = Vec::new();
            for body in rows {
                // A ban this version cannot read is left out (and said).
                match serde_json::from_str(&body?) {
                    Ok(ban) => bans.push(ban),
                    Err(error) => tracing::warn!(%error, "a stored ban is unreadable"),
                }
            }
            Ok(bans)
        })
    }

    fn put_ban(&self, ban: &Ban) -> Result<(), StoreError> {
        let now = now_ms() as i64;
        let writer = self.writer();
        // Bans past their end are forgotten as new ones come.
        writer
            .connection
            .prepare_cached(
                "DELETE FROM bans WHERE json_extract(body, '$.until') IS NOT NULL
                 AND json_extract(body, '$.until') <= ?1",
            )?
            .execute([now])?;
        writer
            .connection
            .prepare_cached("INSERT OR REPLACE INTO bans (id, body) VALUES (?1, ?2)")?
            .execute(params![ban.id, crate::json::to_string(ban)?])?;
        Ok(())
    }

    fn remove_ban(&self, id: &str) -> Result<bool, StoreError> {
        let writer = self.writer();
        let removed = writer
            .connection
            .prepare_cached("DELETE FROM bans WHERE id = ?1")?
            .execute([id])?;
        Ok(removed > 0)
    }

    fn open_direct(&self, room: &RoomName) -> Result<(), StoreError> {
        let Some((a, b)) = room.direct_users() else {
            return Ok(());
        };
        let mut writer = self.writer();
        let transaction = writer.connection.transaction()?;
        for user in [a, b] {
            transaction
                .prepare_cached(
                    "INSERT INTO directs (user, room, opened) VALUES (?1, ?2, ?3)
                     ON CONFLICT (user, room) DO UPDATE SET opened = excluded.opened",
                )?
                .execute(params![user, room.as_str(), now_ms() as i64])?;
            transaction
                .prepare_cached(
                    "DELETE FROM directs WHERE user = ?1 AND room NOT IN
                     (SELECT room FROM directs WHERE user = ?1 ORDER BY opened DESC LIMIT ?2)",
                )?
                .execute(params![user, MAX_DIRECTS as i64])?;
        }
        transaction.commit()?;
        Ok(())
    }

    fn directs(&self, user: &str) -> Result<Vec<RoomName>, StoreError> {
        self.with_reader(|connection| {
            let mut statement = connection.prepare_cached(
                "SELECT room FROM directs WHERE user = ?1 ORDER BY opened DESC, room",
            )?;
            let rooms = statement
                .query_map([user], |row| row.get::<_, String>(0))?
                .filter_map(|room| RoomName::parse(&room.ok()?).ok())
                .collect();
            Ok(rooms)
        })
    }

    fn room_stats(&self, room: &RoomName) -> Result<RoomStats, StoreError> {
        self.with_reader(|connection| {
            let snapshot = connection.unchecked_transaction()?;
            let last_id = stored_last_id(&snapshot, room)?;
            let (messages, bytes): (i64, i64) = snapshot
                .prepare_cached(
                    "SELECT count(*), (SELECT coalesce(max(bytes), 0) FROM rooms WHERE room = ?1)
                     FROM messages WHERE room = ?1",
                )?
                .query_row([room.as_str()], |row| Ok((row.get(0)?, row.get(1)?)))?;
            Ok(RoomStats {
                messages: messages as u64,
                bytes: bytes as u64,
                last_id,
            })
        })
    }

    fn authored(
        &self,
        user: &str,
        from: Option<&Place>,
        limit: usize,
    ) -> Result<Authored, StoreError> {
        self.with_reader(|connection| {
            let (room, id) = from.map_or(("", 0), |place| (place.room.as_str(), place.id as i64));
            let mut statement = connection.prepare_cached(
                "SELECT room, id, json_extract(user, '$.id'), json_extract(user, '$.name')
                 FROM messages WHERE (room, id) > (?1, ?2) ORDER BY room, id LIMIT ?3",
            )?;
            let mut rows = statement.query(params![room, id, limit as i64])?;
            let mut authored = Authored::default();
            let mut last = None;
            while let Some(row) = rows.next()? {
                authored.scanned += 1;
                let Ok(room) = RoomName::parse(&row.get::<_, String>(0)?) else {
                    continue;
                };
                let place = Place {
                    room,
                    id: row.get::<_, i64>(1)? as u64,
                };
                let author_id = row.get::<_, Option<String>>(2)?;
                let author_name = row.get::<_, Option<String>>(3)?;
                let theirs = author_id.as_deref() == Some(user)
                    || (author_id.is_none() && author_name.as_deref() == Some(user));
                if theirs {
                    authored.found.push(place.clone());
                }
                last = Some(place);
            }
            if authored.scanned as usize == limit {
                authored.next = last;
            }
            Ok(authored)
        })
    }

    fn mark_read(&self, user: &str, room: &RoomName, id: u64) -> Result<u64, StoreError> {
        let writer = self.writer();
        let last_id = stored_last_id(&writer.connection, room)?;
        let position: i64 = writer
            .connection
            .prepare_cached(
                "INSERT INTO reads (user, room, id) VALUES (?1, ?2, ?3)
                 ON CONFLICT (user, room) DO UPDATE SET id = max(id, excluded.id)
                 RETURNING id",
            )?
            .query_row(
                params![user, room.as_str(), id.min(last_id) as i64],
                |row| row.get(0),
            )?;
        Ok(position as u64)
    }

    fn read_positions(&self, user: &str) -> Result<Vec<ReadPosition>, StoreError> {
        self.with_reader(|connection| {
            let mut statement = connection.prepare_cached(
                "SELECT reads.room, reads.id, coalesce(rooms.last_id, 0) FROM reads
                 LEFT JOIN rooms ON rooms.room = reads.room WHERE reads.user = ?1",
            )?;
            let rows = statement.query_map([user], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            })?;
            let mut positions = Vec::new();
            for row in rows {
                let (room, read_id, last_id) = row?;
                if let Ok(room) = RoomName::parse(&room) {
                    positions.push(ReadPosition {
                        room,
                        read_id: read_id as u64,
                        last_id: last_id as u64,
                    });
                }
            }
            Ok(positions)
        })
    }

    fn record_events(&self, events: &[Event]) -> Result<(), StoreError> {
        let Some((_, budget)) = &self.outbox else {
            return Ok(());
        };
        let mut taken = Vec::with_capacity(events.len());
        let mut bytes = 0;
        for event in events {
            let size = event.body.len() as u64;
            if budget.fits(size, bytes) {
                bytes += size;
                taken.push(event.clone());
            }
        }
        let mut writer = self.writer();
        let transaction = writer.connection.transaction()?;
        insert_events(&transaction, &taken)?;
        transaction.commit()?;
        budget.added(bytes, taken.len() as u64);
        Ok(())
    }

    fn read_events(&self, max: usize) -> Result<Vec<Recorded>, StoreError> {
        if self.outbox.is_none() {
            return Ok(Vec::new());
        }
        self.with_reader(|connection| {
            let mut statement = connection
                .prepare_cached("SELECT seq, ts, body FROM webhook_outbox ORDER BY seq LIMIT ?1")?;
            let rows = statement.query_map([max as i64], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, String>(2)?,
                ))
            })?;
            let mut events = Vec::new();
            for row in rows {
                let (seq, ts, body) = row?;
                events.push(Recorded {
                    id: format!("{}-{seq}", self.epoch),
                    ts: ts as u64,
                    body,
                });
            }
            Ok(events)
        })
    }

    fn forget_events(&self, delivered: &[Recorded]) -> Result<(), StoreError> {
        let (Some((_, budget)), Some(last)) = (&self.outbox, delivered.last()) else {
            return Ok(());
        };
        // Read oldest first, one batch at a time: the delivered ones are all those up to the
        // last of them.
        let last_seq: i64 = last
            .id
            .rsplit('-')
            .next()
            .and_then(|seq| seq.parse().ok())
            .unwrap_or(0);
        let writer = self.writer();
        writer
            .connection
            .prepare_cached("DELETE FROM webhook_outbox WHERE seq <= ?1")?
            .execute([last_seq])?;
        let bytes = delivered.iter().map(|event| event.body.len() as u64).sum();
        budget.removed(bytes, delivered.len() as u64);
        Ok(())
    }

    fn outbox_budget(&self) -> Option<&Budget> {
        self.outbox.as_ref().map(|(_, budget)| budget)
    }

    fn probe(&self) -> Result<(), StoreError> {
        self.writer()
            .connection
            .prepare_cached(
                "INSERT INTO meta (key, value) VALUES ('probed', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?
            .execute([now_ms().to_string()])?;
        Ok(())
    }

    fn close(&self) -> Result<(), StoreError> {
        // The write-ahead log into the main file, and the log emptied: SQLite does it by itself
        // only when the last connection closes, and the pooled readers may outlive the server.
        self.writer()
            .connection
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_from_before_authors_and_byte_retention_gains_the_columns() {
        let dir = tempfile::tempdir().unwrap();
        let old = Connection::open(dir.path().join(FILE_NAME)).unwrap();
        old.execute_batch(
            "CREATE TABLE messages (room TEXT NOT NULL, id INTEGER NOT NULL, ts INTEGER NOT NULL,
                 body TEXT NOT NULL, PRIMARY KEY (room, id)) WITHOUT ROWID;
             INSERT INTO messages VALUES ('a', 1, 0, '\"old\"');
             CREATE TABLE rooms (room TEXT PRIMARY KEY, last_id INTEGER NOT NULL) WITHOUT ROWID;
             INSERT INTO rooms VALUES ('a', 1);",
        )
        .unwrap();
        drop(old);
        let retention = Retention {
            max_count: 10,
            max_age: None,
            max_bytes: 1 << 20,
            dedupe_window: std::time::Duration::from_secs(60),
        };
        let store = SqliteStore::open(dir.path(), retention, SqliteSync::Normal).unwrap();
        let query = HistoryQuery {
            room: RoomName::parse("a").unwrap(),
            limit: 10,
            before: None,
            after: None,
            max_bytes: 1 << 20,
            newest_first: true,
            reader: None,
        };
        let page = store.page(&query).unwrap().messages;
        assert_eq!(page[0].message.get(), "\"old\"");
        assert!(page[0].user.is_none());
        // The room's byte total was filled in from what it held.
        let writer = store.writer();
        let bytes: i64 = writer
            .connection
            .query_row("SELECT bytes FROM rooms", [], |row| row.get(0))
            .unwrap();
        assert_eq!(bytes, 5);
    }
}
