//! Backups of the embedded history and restoring them (`livechat backup`, `livechat restore`).
//!
//! A backup is taken from a second process over the same data directory, while the node keeps
//! serving: SQLite's online backup API copies the file in one step, inside one read transaction,
//! so the copy is the history as of one commit (WAL lets the node's writer go on meanwhile; a
//! backup in several steps would start again after every commit of a busy node). The copy is
//! written beside its destination, checked (`PRAGMA quick_check`), made one self-contained file
//! (no WAL), synced and renamed into place: an interrupted backup never leaves a partial file
//! under the name asked for.
//!
//! A restore copies a backup into a data directory that has no history yet. Ids and history are
//! the backup's; the numbering goes on in a new epoch that notes the backup's epoch and each
//! room's last id then (`rooms.renewed_through`), because messages stored after the backup was
//! taken are not in it: a client resuming from the backup's epoch gets what it missed when its
//! id is within the backup, and a `reset` when it saw messages the backup does not have.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::StoreError;
use super::sqlite::{RENEWED_FROM, check_file, history_file, upgrade};
use crate::epoch::new_epoch;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{path}: {problem}")]
    File { path: String, problem: String },
    #[error("{path}: {error}")]
    Sqlite {
        path: String,
        error: rusqlite::Error,
    },
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
}

/// What a backup or a restore copied.
#[derive(Debug)]
pub struct Copied {
    pub rooms: u64,
    pub messages: u64,
    pub bytes: u64,
    /// The copy's epoch (a restore's new one), and the one it went on from.
    pub epoch: String,
    pub renewed_from: Option<String>,
    pub took: Duration,
}

impl std::fmt::Display for Copied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} rooms, {} messages, {} bytes, epoch {}",
            self.rooms, self.messages, self.bytes, self.epoch
        )?;
        if let Some(old) = &self.renewed_from {
            write!(f, " (going on from epoch {old})")?;
        }
        write!(f, ", in {:.1} s", self.took.as_secs_f64())
    }
}

/// Copies the history in `data_dir` (a node may be running on it) to `to`.
pub fn backup(data_dir: &Path, to: &Path) -> Result<Copied, BackupError> {
    let started = Instant::now();
    let source_path = history_file(data_dir);
    if !source_path.exists() {
        return Err(file_error(
            &source_path,
            "no history here: give the node's data directory (--data-dir or LIVECHAT_DATA_DIR)",
        ));
    }
    // Read-write without create: a stopped node's WAL is recovered, nothing else is written.
    let source = open(
        &source_path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let partial = beside(to, "partial");
    remove_if_there(&partial)?;
    let mut copy = open(&partial, OpenFlags::default())?;
    let copied = copy_whole(&source, &mut copy).map_err(|error| sqlite_error(&source_path, error));
    drop(source);
    if let Err(error) = copied {
        let _ = std::fs::remove_file(&partial);
        return Err(error);
    }
    let finished = finish_copy(&copy, &partial, |connection| {
        Ok(connection.pragma_update(None, "journal_mode", "DELETE")?)
    });
    let summary = finished.and_then(|()| summary(&copy, &partial, started));
    drop(copy);
    let summary = summary.and_then(|summary| {
        put_in_place(&partial, to)?;
        Ok(summary)
    });
    if summary.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    summary
}

/// Copies the backup `from` into `data_dir`, which must not hold a history yet.
pub fn restore(from: &Path, data_dir: &Path) -> Result<Copied, BackupError> {
    let started = Instant::now();
    let target = history_file(data_dir);
    if target.exists() || beside(&target, "wal").exists() {
        return Err(file_error(
            &target,
            "a history is already here; a restore goes into a fresh data directory: give an \
             empty or new --data-dir (LIVECHAT_DATA_DIR), or move this file away first",
        ));
    }
    if !from.is_file() {
        return Err(file_error(from, "no such backup file"));
    }
    let source = open(
        from,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    check_file(&source).map_err(|problem| file_error(from, &problem))?;
    std::fs::create_dir_all(data_dir).map_err(|error| io_error(data_dir, error))?;
    let partial = beside(&target, "restoring");
    remove_if_there(&partial)?;
    let mut copy = open(&partial, OpenFlags::default())?;
    let copied = copy_whole(&source, &mut copy).map_err(|error| sqlite_error(from, error));
    drop(source);
    let result = copied
        .and_then(|()| finish_copy(&copy, &partial, renew_epoch))
        .and_then(|()| summary(&copy, &partial, started));
    drop(copy);
    let result = result.and_then(|summary| {
        put_in_place(&partial, &target)?;
        Ok(summary)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

/// The restored file's numbering goes on in a new epoch from the backup's, each room from its
/// last id in the backup.
fn renew_epoch(connection: &Connection) -> Result<(), StoreError> {
    upgrade(connection)?;
    let transaction = connection.unchecked_transaction()?;
    let old: Option<String> = transaction
        .query_row("SELECT value FROM meta WHERE key = 'epoch'", [], |row| {
            row.get(0)
        })
        .optional()?;
    if let Some(old) = old {
        transaction.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
            [RENEWED_FROM, old.as_str()],
        )?;
        transaction.execute("UPDATE rooms SET renewed_through = last_id", [])?;
    }
    transaction.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('epoch', ?1)",
        [&*new_epoch()],
    )?;
    transaction.commit()?;
    Ok(connection.pragma_update(None, "journal_mode", "WAL")?)
}

/// Copies the whole of `from` into `to` in one step: one read transaction of `from`, so the
/// copy is as of one commit whatever is written meanwhile.
fn copy_whole(from: &Connection, to: &mut Connection) -> rusqlite::Result<()> {
    let backup = Backup::new(from, to)?;
    loop {
        match backup.step(-1)? {
            StepResult::Done => return Ok(()),
            StepResult::More => {}
            // Another connection holds a lock the copy needs: it waits its turn.
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Checks a copy, then makes its last changes (`finish`).
fn finish_copy(
    copy: &Connection,
    path: &Path,
    finish: impl FnOnce(&Connection) -> Result<(), StoreError>,
) -> Result<(), BackupError> {
    check_file(copy).map_err(|problem| file_error(path, &problem))?;
    finish(copy).map_err(|error| file_error(path, &error.to_string()))
}

fn summary(copy: &Connection, path: &Path, started: Instant) -> Result<Copied, BackupError> {
    let read = || -> rusqlite::Result<Copied> {
        let (rooms, bytes): (i64, i64) = copy.query_row(
            "SELECT count(*), coalesce(sum(bytes), 0) FROM rooms",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        let messages: i64 =
            copy.query_row("SELECT count(*) FROM messages", [], |row| row.get(0))?;
        let meta = |key: &str| {
            copy.query_row("SELECT value FROM meta WHERE key = ?1", [key], |row| {
                row.get::<_, String>(0)
            })
            .optional()
        };
        Ok(Copied {
            rooms: rooms as u64,
            messages: messages as u64,
            bytes: bytes as u64,
            epoch: meta("epoch")?.unwrap_or_default(),
            renewed_from: meta(RENEWED_FROM)?,
            took: started.elapsed(),
        })
    };
    read().map_err(|error| sqlite_error(path, error))
}

/// Syncs `partial` and renames it to `to`, then syncs the directory: the name holds the whole
/// copy or what it held before.
fn put_in_place(partial: &Path, to: &Path) -> Result<(), BackupError> {
    std::fs::File::open(partial)
        .and_then(|file| file.sync_all())
        .map_err(|error| io_error(partial, error))?;
    std::fs::rename(partial, to).map_err(|error| io_error(to, error))?;
    let directory = to
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(directory)
        .and_then(|directory| directory.sync_all())
        .map_err(|error| io_error(directory, error))
}

fn open(path: &Path, flags: OpenFlags) -> Result<Connection, BackupError> {
    let connection =
        Connection::open_with_flags(path, flags).map_err(|error| sqlite_error(path, error))?;
    connection
        .busy_timeout(Duration::from_secs(30))
        .map_err(|error| sqlite_error(path, error))?;
    Ok(connection)
}

/// `path` with `.suffix` added to its name.
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

fn remove_if_there(path: &Path) -> Result<(), BackupError> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(io_error(path, error)),
        _ => Ok(()),
    }
}

fn file_error(path: &Path, problem: &str) -> BackupError {
    BackupError::File {
        path: path.display().to_string(),
        problem: problem.to_owned(),
    }
}

fn sqlite_error(path: &Path, error: rusqlite::Error) -> BackupError {
    BackupError::Sqlite {
        path: path.display().to_string(),
        error,
    }
}

fn io_error(path: &Path, error: std::io::Error) -> BackupError {
    BackupError::Io {
        path: path.display().to_string(),
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SqliteSync;
    use crate::room::RoomName;
    use crate::store::tests::draft;
    use crate::store::{HistoryQuery, HistoryStore, Retention, SqliteStore};

    const RETENTION: Retention = Retention {
        max_count: 100,
        max_age: None,
        max_bytes: 1 << 20,
        dedupe_window: Duration::from_secs(600),
    };

    fn latest(store: &SqliteStore, room: &str) -> crate::store::Page {
        store
            .page(&HistoryQuery {
                room: RoomName::parse(room).unwrap(),
                limit: 100,
                before: None,
                after: None,
                max_bytes: 1 << 20,
                newest_first: true,
                reader: None,
            })
            .unwrap()
    }

    #[test]
    fn a_backup_restores_the_same_history_going_on_in_a_new_epoch() {
        let node = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(node.path(), RETENTION, SqliteSync::Normal).unwrap();
        store
            .append(
                (1..=5)
                    .map(|n| draft("a", n))
                    .chain([draft("b", 1)])
                    .collect(),
            )
            .unwrap();
        let saved = tempfile::tempdir().unwrap();
        let file = saved.path().join("backup.sqlite3");
        let copied = backup(node.path(), &file).unwrap();
        assert_eq!((copied.rooms, copied.messages), (2, 6));
        assert_eq!(copied.epoch, &*store.epoch());
        // Stored after the backup: not in it.
        store.append(vec![draft("a", 6)]).unwrap();

        let fresh = tempfile::tempdir().unwrap();
        let restored = restore(&file, fresh.path()).unwrap();
        assert_eq!(restored.renewed_from.as_deref(), Some(&*store.epoch()));
        let reopened = SqliteStore::open(fresh.path(), RETENTION, SqliteSync::Normal).unwrap();
        assert_ne!(reopened.epoch(), store.epoch());
        let page = latest(&reopened, "a");
        let ids: Vec<u64> = page.messages.iter().map(|m| m.id).collect();
        assert_eq!(ids, [1, 2, 3, 4, 5]);
        assert_eq!(page.continues, Some((store.epoch(), 5)));
        assert!(
            restore(&file, fresh.path()).is_err(),
            "a data directory with a history is not restored into"
        );
    }
}
