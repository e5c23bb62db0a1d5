//! The history store: where the embedded engine keeps messages, gives them per-room ids that only
//! grow, and answers history pages. Calls block; the engine runs them on its writer thread (appends)
//! or on tokio's blocking pool (reads).
//!
//! `sqlite` is durable (WAL, batched commits); `memory` keeps the same semantics in process memory.

mod memory;
mod sqlite;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use memory::MemoryStore;
pub use sqlite::SqliteStore;

use crate::message::{Draft, StoredMessage};
use crate::room::RoomName;

pub trait HistoryStore: Send + Sync + 'static {
    /// Stores a batch atomically, in order, giving each message the next id of its room and a
    /// timestamp; then deletes what falls outside the per-room count limit.
    fn append(&self, batch: Vec<Draft>) -> Result<Vec<StoredMessage>, StoreError>;

    /// One page of a room's history, oldest first.
    fn page(&self, query: &HistoryQuery) -> Result<Vec<StoredMessage>, StoreError>;

    /// Deletes messages stored before `cutoff_ms` (milliseconds since the Unix epoch).
    fn prune_older_than(&self, cutoff_ms: u64) -> Result<usize, StoreError>;
}

/// `GET /chat/history/`: without bounds the latest `limit` messages; with `before` the `limit`
/// just before it; with `after` the `limit` just after it (with both, the first `limit` between).
#[derive(Debug, Clone)]
pub struct HistoryQuery {
    pub room: RoomName,
    pub limit: usize,
    pub before: Option<u64>,
    pub after: Option<u64>,
}

/// How much history each room keeps.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub max_count: u64,
    pub max_age: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("history database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("stored message {room}/{id} is not valid JSON")]
    Corrupt { room: RoomName, id: u64 },
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    //! The same behaviour checks, run against every store.
    use super::*;
    use crate::message::Author;
    use serde_json::value::RawValue;
    use std::sync::Arc;

    fn draft(room: &str, n: u64) -> Draft {
        Draft {
            room: RoomName::parse(room).unwrap(),
            message: RawValue::from_string(n.to_string()).unwrap(),
            user: None,
        }
    }

    fn query(room: &str, limit: usize, before: Option<u64>, after: Option<u64>) -> HistoryQuery {
        HistoryQuery {
            room: RoomName::parse(room).unwrap(),
            limit,
            before,
            after,
        }
    }

    fn ids(messages: &[StoredMessage]) -> Vec<u64> {
        messages.iter().map(|m| m.id).collect()
    }

    fn behaves_as_a_history_store(store: &dyn HistoryStore) {
        let stored = store
            .append(
                (1..=10)
                    .map(|n| draft("a", n))
                    .chain([draft("b", 1)])
                    .collect(),
            )
            .unwrap();
        assert_eq!(ids(&stored), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1]);
        assert_eq!(
            ids(&store.page(&query("a", 3, None, None)).unwrap()),
            [8, 9, 10]
        );
        assert_eq!(
            ids(&store.page(&query("a", 3, Some(5), None)).unwrap()),
            [2, 3, 4]
        );
        assert_eq!(
            ids(&store.page(&query("a", 3, None, Some(5))).unwrap()),
            [6, 7, 8]
        );
        assert_eq!(
            ids(&store.page(&query("a", 9, Some(5), Some(1))).unwrap()),
            [2, 3, 4]
        );
        assert_eq!(ids(&store.page(&query("b", 50, None, None)).unwrap()), [1]);
        assert!(
            store
                .page(&query("nobody", 50, None, None))
                .unwrap()
                .is_empty()
        );
        // Retention keeps 10 per room: ids keep growing past deleted ones.
        store.append(vec![draft("a", 11), draft("a", 12)]).unwrap();
        assert_eq!(
            ids(&store.page(&query("a", 2, Some(5), None)).unwrap()),
            [3, 4]
        );
        assert_eq!(
            ids(&store.page(&query("a", 50, None, None)).unwrap()).len(),
            10
        );
        assert_eq!(store.prune_older_than(now_ms() + 1).unwrap(), 11);
        assert!(store.page(&query("a", 50, None, None)).unwrap().is_empty());
        assert_eq!(ids(&store.append(vec![draft("a", 13)]).unwrap()), [13]);
        // The author is kept with the message.
        let alice = Arc::new(Author {
            id: Some("u1".into()),
            name: Some("Alice".into()),
        });
        let mut signed = draft("c", 1);
        signed.user = Some(alice.clone());
        store.append(vec![signed]).unwrap();
        let page = store.page(&query("c", 1, None, None)).unwrap();
        assert_eq!(page[0].user.as_deref(), Some(&*alice));
    }

    const RETENTION: Retention = Retention {
        max_count: 10,
        max_age: None,
    };

    #[test]
    fn memory_store() {
        behaves_as_a_history_store(&MemoryStore::new(RETENTION));
    }

    #[test]
    fn sqlite_store_and_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            SqliteStore::open(dir.path(), RETENTION, crate::config::SqliteSync::Normal).unwrap();
        behaves_as_a_history_store(&store);
        drop(store);
        let reopened =
            SqliteStore::open(dir.path(), RETENTION, crate::config::SqliteSync::Full).unwrap();
        assert_eq!(ids(&reopened.append(vec![draft("a", 14)]).unwrap()), [14]);
        assert_eq!(
            ids(&reopened.page(&query("a", 50, None, None)).unwrap()),
            [13, 14]
        );
    }
}
