//! Reading everything a history file holds, for `livechat migrate` (`engine::redis::migrate`
//! writes it to Redis): rooms with their numbering, messages in id order with what changed them,
//! reactions, nonces, read positions, direct-message lists, bans and the webhook outbox.
//!
//! Everything is read in one read transaction, so that a node still running on the file does
//! not make the export see half a commit (what it stores after the export began is not in it;
//! running the migration again copies it).

use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::StoreError;
use super::sqlite::{RENEWED_FROM, check_file, history_file, upgrade};

/// A room's numbering.
#[derive(Debug, Clone)]
pub struct RoomNumbering {
    pub room: String,
    pub last_id: u64,
    /// Changes made to its messages (the counter a resume orders them by).
    pub changes: u64,
    /// For a restored file: the room's last id in the backup (see `store::backup`).
    pub renewed_through: Option<u64>,
}

/// A message as the file holds it.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: u64,
    pub ts: u64,
    /// Its JSON (`null` for a deleted one).
    pub body: String,
    /// Its author as JSON.
    pub user: Option<String>,
    pub nonce: Option<String>,
    pub reply_to: Option<u64>,
    pub edited_ts: Option<u64>,
    pub deleted: bool,
    /// At its last change: the room's last id then, and the room's change counter (0: never
    /// changed).
    pub changed_after: u64,
    pub change_seq: u64,
}

pub struct Export {
    connection: Connection,
}

impl Export {
    /// Opens the history file in `data_dir` and begins the read that every later call is part of.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let path = history_file(data_dir);
        let unusable = |problem: String| StoreError::Unusable {
            path: path.display().to_string(),
            problem,
        };
        if !path.exists() {
            return Err(unusable(
                "no history here: give the node's data directory (--data-dir or LIVECHAT_DATA_DIR)"
                    .into(),
            ));
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection = Connection::open_with_flags(&path, flags)?;
        connection.busy_timeout(std::time::Duration::from_secs(30))?;
        check_file(&connection).map_err(unusable)?;
        // A file last written by an older version gains what this one reads, as at a start.
        upgrade(&connection)?;
        connection.execute_batch("BEGIN")?;
        // The snapshot starts with the first read.
        connection.query_row("SELECT count(*) FROM rooms", [], |_| Ok(()))?;
        Ok(Self { connection })
    }

    /// The file's epoch, and the one it went on from (a restored file).
    pub fn epochs(&self) -> Result<(Option<String>, Option<String>), StoreError> {
        let meta = |key: &str| {
            self.connection
                .query_row("SELECT value FROM meta WHERE key = ?1", [key], |row| {
                    row.get::<_, String>(0)
                })
                .optional()
        };
        Ok((meta("epoch")?, meta(RENEWED_FROM)?))
    }

    /// Messages held, tombstones included.
    pub fn message_count(&self) -> Result<u64, StoreError> {
        let count: i64 = self
            .connection
            .query_row("SELECT count(*) FROM messages", [], |row| row.get(0))?;
        Ok(count as u64)
    }

    /// Every room, in name order.
    pub fn rooms(&self) -> Result<Vec<RoomNumbering>, StoreError> {
        let mut statement = self
            .connection
            .prepare("SELECT room, last_id, changes, renewed_through FROM rooms ORDER BY room")?;
        let rows = statement.query_map([], |row| {
            Ok(RoomNumbering {
                room: row.get(0)?,
                last_id: row.get::<_, i64>(1)? as u64,
                changes: row.get::<_, i64>(2)? as u64,
                renewed_through: row.get::<_, Option<i64>>(3)?.map(|id| id as u64),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Messages of `room` numbered in this file, after `after` in id order, at most `limit`.
    pub fn messages(&self, room: &str, after: u64, limit: usize) -> Result<Vec<Row>, StoreError> {
        let mut statement = self.connection.prepare_cached(
            "SELECT id, ts, body, user, nonce, reply_to, edited_ts, deleted, changed_after,
                    change_seq
             FROM messages WHERE room = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
        )?;
        let rows = statement.query_map(params![room, after as i64, limit as i64], |row| {
            Ok(Row {
                id: row.get::<_, i64>(0)? as u64,
                ts: row.get::<_, i64>(1)? as u64,
                body: row.get(2)?,
                user: row.get(3)?,
                nonce: row.get(4)?,
                reply_to: row.get::<_, Option<i64>>(5)?.map(|id| id as u64),
                edited_ts: row.get::<_, Option<i64>>(6)?.map(|ts| ts as u64),
                deleted: row.get::<_, i64>(7)? != 0,
                changed_after: row.get::<_, i64>(8)? as u64,
                change_seq: row.get::<_, i64>(9)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Who reacted to which message of `room` with what: (id, emoji, user key).
    pub fn reactions(&self, room: &str) -> Result<Vec<(u64, String, String)>, StoreError> {
        let mut statement = self.connection.prepare_cached(
            "SELECT id, emoji, user FROM reactions WHERE room = ?1 ORDER BY id, emoji, user",
        )?;
        let rows = statement.query_map([room], |row| {
            Ok((row.get::<_, i64>(0)? as u64, row.get(1)?, row.get(2)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Nonces of `room` stored at or after `since_ms`: (nonce, id, ts).
    pub fn nonces(&self, room: &str, since_ms: u64) -> Result<Vec<(String, u64, u64)>, StoreError> {
        let mut statement = self
            .connection
            .prepare_cached("SELECT nonce, id, ts FROM nonces WHERE room = ?1 AND ts >= ?2")?;
        let rows = statement.query_map(params![room, since_ms as i64], |row| {
            Ok((
                row.get(0)?,
                row.get::<_, i64>(1)? as u64,
                row.get::<_, i64>(2)? as u64,
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Read positions: (user key, room, id).
    pub fn reads(&self) -> Result<Vec<(String, String, u64)>, StoreError> {
        self.triples("SELECT user, room, id FROM reads ORDER BY user")
    }

    /// Direct-message lists: (user, room, when opened in ms).
    pub fn directs(&self) -> Result<Vec<(String, String, u64)>, StoreError> {
        self.triples("SELECT user, room, opened FROM directs ORDER BY user")
    }

    /// Bans and mutes: (id, the ban as JSON).
    pub fn bans(&self) -> Result<Vec<(String, String)>, StoreError> {
        let mut statement = self.connection.prepare("SELECT id, body FROM bans")?;
        let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Webhook events not yet delivered, oldest first: (sequence, ts, event JSON).
    pub fn outbox(&self) -> Result<Vec<(u64, u64, String)>, StoreError> {
        let mut statement = self
            .connection
            .prepare("SELECT seq, ts, body FROM webhook_outbox ORDER BY seq")?;
        let rows = statement.query_map([], |row| {
            Ok((
                row.get::<_, i64>(0)? as u64,
                row.get::<_, i64>(1)? as u64,
                row.get(2)?,
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn triples(&self, sql: &str) -> Result<Vec<(String, String, u64)>, StoreError> {
        let mut statement = self.connection.prepare(sql)?;
        let rows = statement.query_map([], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get::<_, i64>(2)? as u64))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
