//! History in a SQLite file (`history.sqlite3` in the data directory), in WAL mode.
//!
//! One connection writes, used only by the engine's writer thread, which hands it whole batches:
//! one transaction and one commit (one fsync with `synchronous=FULL`) per batch. Readers use their
//! own connections, which WAL lets run beside the writer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OpenFlags, params};
use serde_json::value::RawValue;

use super::{HistoryQuery, HistoryStore, Retention, StoreError, now_ms};
use crate::config::SqliteSync;
use crate::message::{Author, Draft, StoredMessage};
use crate::room::RoomName;

const FILE_NAME: &str = "history.sqlite3";

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS rooms (
        room    TEXT PRIMARY KEY,
        last_id INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS messages (
        room TEXT    NOT NULL,
        id   INTEGER NOT NULL,
        ts   INTEGER NOT NULL,
        body TEXT    NOT NULL,
        user TEXT,
        PRIMARY KEY (room, id)
    ) WITHOUT ROWID;
";

/// Only age retention reads messages by time; without it the index would only slow every commit
/// (measured: 31.7 k -> 37-41 k stored messages/s over HTTP without it).
const TIME_INDEX: &str = "CREATE INDEX IF NOT EXISTS messages_by_ts ON messages (ts)";
const NO_TIME_INDEX: &str = "DROP INDEX IF EXISTS messages_by_ts";

pub struct SqliteStore {
    writer: Mutex<Writer>,
    readers: Mutex<Vec<Connection>>,
    path: PathBuf,
    max_count: u64,
}

struct Writer {
    connection: Connection,
    /// The last id given in each room seen since start; the `rooms` table keeps it across
    /// restarts, so ids keep growing even after retention deleted every message of a room.
    last_ids: HashMap<RoomName, u64>,
}

impl SqliteStore {
    pub fn open(
        data_dir: &Path,
        retention: Retention,
        sync: SqliteSync,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.display().to_string(),
            source,
        })?;
        let path = data_dir.join(FILE_NAME);
        let connection = Connection::open(&path)?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        let synchronous = match sync {
            SqliteSync::Full => "FULL",
            SqliteSync::Normal => "NORMAL",
        };
        connection.pragma_update(None, "synchronous", synchronous)?;
        connection.busy_timeout(std::time::Duration::from_secs(5))?;
        connection.execute_batch(SCHEMA)?;
        add_user_column(&connection)?;
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
        })
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
        self.readers().push(connection);
        result
    }
}

/// History files written before messages had authors lack the column; they gain it, empty.
fn add_user_column(connection: &Connection) -> Result<(), StoreError> {
    let has_user = connection
        .prepare("SELECT 1 FROM pragma_table_info('messages') WHERE name = 'user'")?
        .exists([])?;
    if !has_user {
        connection.execute_batch("ALTER TABLE messages ADD COLUMN user TEXT")?;
    }
    Ok(())
}

impl Writer {
    fn last_id(&mut self, room: &RoomName) -> Result<u64, StoreError> {
        if let Some(id) = self.last_ids.get(room) {
            return Ok(*id);
        }
        let id = self
            .connection
            .prepare_cached("SELECT last_id FROM rooms WHERE room = ?1")?
            .query_row([room.as_str()], |row| row.get::<_, i64>(0))
            .map(|id| id as u64)
            .or_else(|error| match error {
                rusqlite::Error::QueryReturnedNoRows => Ok(0),
                error => Err(error),
            })?;
        self.last_ids.insert(room.clone(), id);
        Ok(id)
    }
}

impl HistoryStore for SqliteStore {
    fn append(&self, batch: Vec<Draft>) -> Result<Vec<StoredMessage>, StoreError> {
        let ts = now_ms();
        let mut writer = self.writer();
        // Ids given in this batch; they become the cached last ids only once the commit succeeds.
        let mut batch_ids: HashMap<RoomName, u64> = HashMap::new();
        let mut stored = Vec::with_capacity(batch.len());
        for draft in batch {
            let id = match batch_ids.get(&draft.room) {
                Some(id) => id + 1,
                None => writer.last_id(&draft.room)? + 1,
            };
            batch_ids.insert(draft.room.clone(), id);
            stored.push(StoredMessage {
                id,
                room: draft.room,
                message: draft.message,
                ts,
                user: draft.user,
            });
        }
        let transaction = writer.connection.transaction()?;
        {
            let mut insert = transaction.prepare_cached(
                "INSERT INTO messages (room, id, ts, body, user) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for message in &stored {
                insert.execute(params![
                    message.room.as_str(),
                    message.id as i64,
                    ts as i64,
                    message.message.get(),
                    message.user.as_ref().map(|user| user.to_json()),
                ])?;
            }
            let mut advance = transaction.prepare_cached(
                "INSERT INTO rooms (room, last_id) VALUES (?1, ?2)
                 ON CONFLICT (room) DO UPDATE SET last_id = excluded.last_id",
            )?;
            let mut trim =
                transaction.prepare_cached("DELETE FROM messages WHERE room = ?1 AND id <= ?2")?;
            for (room, last_id) in &batch_ids {
                advance.execute(params![room.as_str(), *last_id as i64])?;
                if *last_id > self.max_count {
                    trim.execute(params![room.as_str(), (last_id - self.max_count) as i64])?;
                }
            }
        }
        transaction.commit()?;
        writer.last_ids.extend(batch_ids);
        Ok(stored)
    }

    fn page(&self, query: &HistoryQuery) -> Result<Vec<StoredMessage>, StoreError> {
        // Without `after`, take the newest matching rows and turn them oldest-first afterwards.
        let newest_first = query.after.is_none();
        let sql = if newest_first {
            "SELECT id, ts, body, user FROM messages WHERE room = ?1 AND id > ?2 AND id < ?3
             ORDER BY id DESC LIMIT ?4"
        } else {
            "SELECT id, ts, body, user FROM messages WHERE room = ?1 AND id > ?2 AND id < ?3
             ORDER BY id ASC LIMIT ?4"
        };
        let after = query.after.unwrap_or(0).min(i64::MAX as u64) as i64;
        let before = query.before.unwrap_or(u64::MAX).min(i64::MAX as u64) as i64;
        let mut page = self.with_reader(|connection| {
            let mut statement = connection.prepare_cached(sql)?;
            let rows = statement.query_map(
                params![query.room.as_str(), after, before, query.limit as i64],
                |row| {
                    Ok((
                        row.get::<_, i64>(0)? as u64,
                        row.get::<_, i64>(1)? as u64,
                        row.get::<_, String>(2)?,
                        row.get::<_, Option<String>>(3)?,
                    ))
                },
            )?;
            let mut page = Vec::new();
            for row in rows {
                let (id, ts, body, user) = row?;
                let message = RawValue::from_string(body).map_err(|_| StoreError::Corrupt {
                    room: query.room.clone(),
                    id,
                })?;
                page.push(StoredMessage {
                    id,
                    room: query.room.clone(),
                    message,
                    ts,
                    user: user.as_deref().and_then(Author::from_json),
                });
            }
            Ok(page)
        })?;
        if newest_first {
            page.reverse();
        }
        Ok(page)
    }

    fn prune_older_than(&self, cutoff_ms: u64) -> Result<usize, StoreError> {
        let writer = self.writer();
        let pruned = writer
            .connection
            .prepare_cached("DELETE FROM messages WHERE ts < ?1")?
            .execute([cutoff_ms as i64])?;
        Ok(pruned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_from_before_authors_gains_the_column() {
        let dir = tempfile::tempdir().unwrap();
        let old = Connection::open(dir.path().join(FILE_NAME)).unwrap();
        old.execute_batch(
            "CREATE TABLE messages (room TEXT NOT NULL, id INTEGER NOT NULL, ts INTEGER NOT NULL,
                 body TEXT NOT NULL, PRIMARY KEY (room, id)) WITHOUT ROWID;
             INSERT INTO messages VALUES ('a', 1, 0, '\"old\"');",
        )
        .unwrap();
        drop(old);
        let retention = Retention {
            max_count: 10,
            max_age: None,
        };
        let store = SqliteStore::open(dir.path(), retention, SqliteSync::Normal).unwrap();
        let query = HistoryQuery {
            room: RoomName::parse("a").unwrap(),
            limit: 10,
            before: None,
            after: None,
        };
        let page = store.page(&query).unwrap();
        assert_eq!(page[0].message.get(), "\"old\"");
        assert!(page[0].user.is_none());
    }
}
