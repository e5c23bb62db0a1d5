//! The history store: where the embedded engine keeps messages, gives them per-room ids that only
//! grow, and answers history pages. Calls block; the engine runs them on its writer thread (appends)
//! or on tokio's blocking pool (reads).
//!
//! `sqlite` is durable (WAL, batched commits); `memory` keeps the same semantics in process memory.

pub mod backup;
pub mod export;
mod memory;
mod sqlite;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use memory::MemoryStore;
pub use sqlite::SqliteStore;

use serde::Serialize;

use crate::change::{Change, ChangeRefused, Changed};
use crate::epoch::Epoch;
use crate::message::{Draft, StoredMessage};
use crate::moderation::Ban;
use crate::room::RoomName;
use crate::webhooks::{Budget, Event, Recorded};

pub trait HistoryStore: Send + Sync + 'static {
    /// Stores a batch atomically, in order, giving each message the next id of its room and a
    /// timestamp; then deletes what falls outside the per-room limits. A draft whose nonce was
    /// already stored in its room within the dedupe window is not stored again: its outcome is
    /// the first message.
    fn append(&self, batch: Vec<Draft>) -> Result<Vec<Appended>, StoreError>;

    /// One page of a room's history, oldest first, cut at `query.max_bytes`.
    fn page(&self, query: &HistoryQuery) -> Result<Page, StoreError>;

    /// Deletes messages stored before `cutoff_ms` (milliseconds since the Unix epoch).
    fn prune_older_than(&self, cutoff_ms: u64) -> Result<usize, StoreError>;

    /// Forgets nonces stored before `cutoff_ms`.
    fn forget_nonces_before(&self, cutoff_ms: u64) -> Result<usize, StoreError>;

    /// The numbering of every room in this store: it changes only with a new store.
    fn epoch(&self) -> Epoch;

    /// Up to `limit` rooms with stored messages, the latest written first, with the time of
    /// their newest message.
    fn recent_rooms(&self, limit: usize) -> Result<Vec<RecentRoom>, StoreError>;

    /// Makes `change` if its author may (see `crate::change`), with `edit_window` for authors;
    /// the webhook event goes with it. The inner error is the asker's (nothing changed).
    fn change(
        &self,
        change: &Change,
        edit_window: Option<Duration>,
    ) -> Result<Result<Changed, ChangeRefused>, StoreError>;

    /// The messages of `room` with ids up to `through` changed since `through` was the room's
    /// last id, in the order of their last changes, as they are now (at most `limit`).
    fn changed_since(
        &self,
        room: &RoomName,
        through: u64,
        reader: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError>;

    /// Moves `user`'s read position in `room` forward to `id` (never back, never past the room's
    /// last id): the position now.
    fn mark_read(&self, user: &str, room: &RoomName, id: u64) -> Result<u64, StoreError>;

    /// Every room `user` has a read position in, with the room's last id.
    fn read_positions(&self, user: &str) -> Result<Vec<ReadPosition>, StoreError>;

    /// Bans and mutes (`crate::moderation`): every one stored, those past their end included
    /// until they are forgotten.
    fn bans(&self) -> Result<Vec<Ban>, StoreError>;
    fn put_ban(&self, ban: &Ban) -> Result<(), StoreError>;
    /// Whether there was such a ban.
    fn remove_ban(&self, id: &str) -> Result<bool, StoreError>;

    /// Notes a direct-message room in both its users' lists (each keeps the `MAX_DIRECTS` it
    /// opened last).
    fn open_direct(&self, room: &RoomName) -> Result<(), StoreError>;

    /// The direct-message rooms in `user`'s list, the latest opened first.
    fn directs(&self, user: &str) -> Result<Vec<RoomName>, StoreError>;

    /// What the store holds of a room: its messages (tombstones included), their bytes, its
    /// last id.
    fn room_stats(&self, room: &RoomName) -> Result<RoomStats, StoreError>;

    /// Messages of `user` (its id or chosen name) among the next `limit` stored after `from`
    /// (in room and id order), and where to go on (`None`: all were read).
    fn authored(
        &self,
        user: &str,
        from: Option<&Place>,
        limit: usize,
    ) -> Result<Authored, StoreError>;

    /// The webhook outbox (when the store was given one): a stored message's event is
    /// recorded in `append`, with it; these record other events, read the oldest waiting ones
    /// and forget those delivered. Without an outbox, nothing is recorded or read.
    fn record_events(&self, events: &[Event]) -> Result<(), StoreError>;
    fn read_events(&self, max: usize) -> Result<Vec<Recorded>, StoreError>;
    fn forget_events(&self, delivered: &[Recorded]) -> Result<(), StoreError>;
    /// What the outbox holds against its bound (`None`: no outbox).
    fn outbox_budget(&self) -> Option<&Budget>;

    /// Makes one small write, to learn whether writes succeed again (after the disk was full).
    fn probe(&self) -> Result<(), StoreError>;

    /// The server is stopping and nothing more will be written: everything written goes into
    /// the store's main file, so that the file alone is the whole history (a copy of it, a
    /// restore, another SQLite program).
    fn close(&self) -> Result<(), StoreError>;
}

/// Most direct-message rooms a user's list keeps (the oldest opened go first).
pub const MAX_DIRECTS: usize = 500;

/// What a store holds of a room.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomStats {
    pub messages: u64,
    pub bytes: u64,
    pub last_id: u64,
}

/// A place among all stored messages, in room then id order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Place {
    pub room: RoomName,
    pub id: u64,
}

/// A user's messages found in one pass over stored messages.
#[derive(Debug, Default)]
pub struct Authored {
    pub found: Vec<Place>,
    /// Messages looked at.
    pub scanned: u64,
    /// Where the next pass starts; `None`: none is needed.
    pub next: Option<Place>,
}

/// A user's read position in a room, and the room's last id: what it has not read is between.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadPosition {
    pub room: RoomName,
    pub read_id: u64,
    pub last_id: u64,
}

/// A room with stored messages, and when its newest was written (ms since the Unix epoch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RecentRoom {
    #[schema(value_type = String)]
    pub room: RoomName,
    pub ts: u64,
}

/// What became of a draft.
#[derive(Debug)]
pub enum Appended {
    Stored(StoredMessage),
    /// Its nonce was seen: the message first stored with it (its content as stored, if the
    /// store still has it, else the draft's).
    Duplicate(StoredMessage),
    /// Not stored, for this reason.
    Refused(Refused),
}

/// Why a draft was not stored (the publisher's fault, not the store's).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("cannot reply to message {0}: there is no such message in this room")]
    NoReplyTarget(u64),
}

/// The messages with `after < id < before`: the `limit` newest of them when `newest_first`,
/// else the `limit` oldest. A page holds at most `max_bytes` of messages (at least one message,
/// whatever its size).
#[derive(Debug, Clone)]
pub struct HistoryQuery {
    pub room: RoomName,
    pub limit: usize,
    pub before: Option<u64>,
    pub after: Option<u64>,
    pub max_bytes: usize,
    pub newest_first: bool,
    /// Who reads (a user key, see `crate::presence::user_key`): reactions say whether it is
    /// among those who reacted (`me`).
    pub reader: Option<String>,
}

/// A page of history, oldest first.
#[derive(Debug, Default)]
pub struct Page {
    pub messages: Vec<StoredMessage>,
    /// The byte cap cut the page short: the range holds more (read on from the page's edge).
    pub more: bool,
    /// The room's last id when the page was read (0: nothing ever stored).
    pub last_id: u64,
    pub epoch: Epoch,
    /// The epoch this one went on from, and the room's last id then: a history restored from a
    /// backup numbers on from the backup's ids in a new epoch (`None`: it did not).
    pub continues: Option<(Epoch, u64)>,
}

/// Builds a page in the order the store reads it, stopping at the query's limit or byte cap.
pub struct PageBuilder {
    page: Page,
    bytes: usize,
    limit: usize,
    max_bytes: usize,
    newest_first: bool,
}

impl PageBuilder {
    pub fn new(query: &HistoryQuery) -> Self {
        Self {
            page: Page::default(),
            bytes: 0,
            limit: query.limit,
            max_bytes: query.max_bytes,
            newest_first: query.newest_first,
        }
    }

    /// Takes the next message read; false once the page is full (the message is not taken).
    pub fn offer(&mut self, message: StoredMessage) -> bool {
        if self.page.messages.len() >= self.limit {
            return false;
        }
        let size = message.stored_bytes();
        if !self.page.messages.is_empty() && self.bytes + size > self.max_bytes {
            self.page.more = true;
            return false;
        }
        self.bytes += size;
        self.page.messages.push(message);
        true
    }

    /// Whether another message would still be taken.
    pub fn wants_more(&self) -> bool {
        !self.page.more && self.page.messages.len() < self.limit
    }

    /// Bytes the page may still take.
    pub fn bytes_left(&self) -> usize {
        self.max_bytes.saturating_sub(self.bytes)
    }

    pub fn finish(mut self, last_id: u64, epoch: Epoch) -> Page {
        if self.newest_first {
            self.page.messages.reverse();
        }
        Page {
            last_id,
            epoch,
            continues: None,
            ..self.page
        }
    }
}

/// How much history each room keeps.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub max_count: u64,
    pub max_age: Option<Duration>,
    /// Bytes of messages (their JSON and author) per room.
    pub max_bytes: u64,
    /// How long a nonce is remembered.
    pub dedupe_window: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("history database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error(
        "cannot create data directory {path}: {error}: create it writable by this user, or set \
         LIVECHAT_DATA_DIR to a writable directory"
    )]
    DataDir { path: String, error: std::io::Error },
    #[error("stored message {room}/{id} is not valid JSON")]
    Corrupt { room: RoomName, id: u64 },
    /// The history file cannot be used as it is: what is wrong with it and what to do.
    #[error("{path}: {problem}")]
    Unusable { path: String, problem: String },
    /// A value to store could not be written as JSON (a bug; logged and counted).
    #[error(transparent)]
    Unencodable(#[from] crate::json::Unencodable),
}

impl StoreError {
    /// The disk holding the history is full (SQLite's `SQLITE_FULL`): nothing more can be
    /// written until space is freed; what is stored is intact.
    pub fn is_full(&self) -> bool {
        matches!(
            self,
            Self::Sqlite(rusqlite::Error::SqliteFailure(failure, _))
                if failure.code == rusqlite::ErrorCode::DiskFull
        )
    }
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

    pub(super) fn draft(room: &str, n: u64) -> Draft {
        Draft {
            room: RoomName::parse(room).unwrap(),
            message: RawValue::from_string(n.to_string()).unwrap(),
            user: None,
            nonce: None,
            reply_to: None,
            from_layer: false,
        }
    }

    fn query(room: &str, limit: usize, before: Option<u64>, after: Option<u64>) -> HistoryQuery {
        HistoryQuery {
            room: RoomName::parse(room).unwrap(),
            limit,
            before,
            after,
            max_bytes: 1 << 20,
            newest_first: after.is_none(),
            reader: None,
        }
    }

    fn ids(messages: &[StoredMessage]) -> Vec<u64> {
        messages.iter().map(|m| m.id).collect()
    }

    /// The ids given, stored or first stored with the nonce.
    fn appended_ids(appended: &[Appended]) -> Vec<u64> {
        appended
            .iter()
            .map(|outcome| match outcome {
                Appended::Stored(message) | Appended::Duplicate(message) => message.id,
                Appended::Refused(refused) => panic!("refused: {refused}"),
            })
            .collect()
    }

    fn page_ids(store: &dyn HistoryStore, query: &HistoryQuery) -> Vec<u64> {
        ids(&store.page(query).unwrap().messages)
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
        assert_eq!(appended_ids(&stored), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1]);
        assert_eq!(page_ids(store, &query("a", 3, None, None)), [8, 9, 10]);
        assert_eq!(page_ids(store, &query("a", 3, Some(5), None)), [2, 3, 4]);
        assert_eq!(page_ids(store, &query("a", 3, None, Some(5))), [6, 7, 8]);
        assert_eq!(page_ids(store, &query("a", 9, Some(5), Some(1))), [2, 3, 4]);
        assert_eq!(page_ids(store, &query("b", 50, None, None)), [1]);
        assert!(
            store
                .page(&query("nobody", 50, None, None))
                .unwrap()
                .messages
                .is_empty()
        );
        // Retention keeps 10 per room: ids keep growing past deleted ones.
        store.append(vec![draft("a", 11), draft("a", 12)]).unwrap();
        assert_eq!(page_ids(store, &query("a", 2, Some(5), None)), [3, 4]);
        assert_eq!(page_ids(store, &query("a", 50, None, None)).len(), 10);
        assert_eq!(store.prune_older_than(now_ms() + 1).unwrap(), 11);
        assert!(page_ids(store, &query("a", 50, None, None)).is_empty());
        assert_eq!(
            appended_ids(&store.append(vec![draft("a", 13)]).unwrap()),
            [13]
        );
        // The author is kept with the message.
        let alice = Arc::new(Author {
            id: Some("u1".into()),
            name: Some("Alice".into()),
        });
        let mut signed = draft("c", 1);
        signed.user = Some(alice.clone());
        store.append(vec![signed]).unwrap();
        let page = store.page(&query("c", 1, None, None)).unwrap().messages;
        assert_eq!(page[0].user.as_deref(), Some(&*alice));
        pages_stop_at_their_byte_cap(store);
    }

    /// Messages of 10 bytes (`"xxxxxxxx"`); pages of 25 bytes hold two, and say there is more.
    fn pages_stop_at_their_byte_cap(store: &dyn HistoryStore) {
        store
            .append((0..5).map(|_| ten_bytes_in("d")).collect())
            .unwrap();
        let capped = |before: Option<u64>, after: Option<u64>, max_bytes: usize| HistoryQuery {
            max_bytes,
            ..query("d", 50, before, after)
        };
        let latest = store.page(&capped(None, None, 25)).unwrap();
        assert_eq!((ids(&latest.messages), latest.more), (vec![4, 5], true));
        let older = store.page(&capped(Some(4), None, 25)).unwrap();
        assert_eq!((ids(&older.messages), older.more), (vec![2, 3], true));
        let oldest = store.page(&capped(Some(2), None, 25)).unwrap();
        assert_eq!((ids(&oldest.messages), oldest.more), (vec![1], false));
        let forward = store.page(&capped(None, Some(1), 25)).unwrap();
        assert_eq!((ids(&forward.messages), forward.more), (vec![2, 3], true));
        // One message bigger than the cap still comes, alone.
        let tiny = store.page(&capped(None, None, 3)).unwrap();
        assert_eq!((ids(&tiny.messages), tiny.more), (vec![5], true));
    }

    /// Rooms of 10-byte messages under a 35-byte cap keep their newest three.
    fn keeps_rooms_under_their_byte_cap(store: &dyn HistoryStore) {
        let drafts = (0..5).map(|n| Draft {
            room: RoomName::parse("e").unwrap(),
            message: RawValue::from_string(format!("\"xxxxxxx{n}\"")).unwrap(),
            user: None,
            nonce: None,
            reply_to: None,
            from_layer: false,
        });
        store.append(drafts.collect()).unwrap();
        assert_eq!(page_ids(store, &query("e", 50, None, None)), [3, 4, 5]);
        let big = Draft {
            room: RoomName::parse("e").unwrap(),
            message: RawValue::from_string(format!("\"{}\"", "y".repeat(100))).unwrap(),
            user: None,
            nonce: None,
            reply_to: None,
            from_layer: false,
        };
        store.append(vec![big]).unwrap();
        assert_eq!(
            page_ids(store, &query("e", 50, None, None)),
            [6],
            "the newest stays"
        );
        store.append(vec![ten_bytes_in("e")]).unwrap();
        assert_eq!(page_ids(store, &query("e", 50, None, None)), [7]);
        store
            .append(vec![ten_bytes_in("e"), ten_bytes_in("e")])
            .unwrap();
        assert_eq!(page_ids(store, &query("e", 50, None, None)), [7, 8, 9]);
    }

    fn ten_bytes_in(room: &str) -> Draft {
        Draft {
            room: RoomName::parse(room).unwrap(),
            message: RawValue::from_string("\"xxxxxxxx\"".into()).unwrap(),
            user: None,
            nonce: None,
            reply_to: None,
            from_layer: false,
        }
    }

    const BYTE_CAPPED: Retention = Retention {
        max_count: 100,
        max_age: None,
        max_bytes: 35,
        dedupe_window: Duration::from_secs(600),
    };

    #[test]
    fn memory_store_byte_retention() {
        keeps_rooms_under_their_byte_cap(&MemoryStore::new(BYTE_CAPPED));
    }

    #[test]
    fn sqlite_store_byte_retention() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            SqliteStore::open(dir.path(), BYTE_CAPPED, crate::config::SqliteSync::Normal).unwrap();
        keeps_rooms_under_their_byte_cap(&store);
        // Age pruning takes its share off the room's total.
        assert_eq!(store.prune_older_than(now_ms() + 1).unwrap(), 3);
        for _ in 0..3 {
            store.append(vec![ten_bytes_in("e")]).unwrap();
        }
        assert_eq!(page_ids(&store, &query("e", 50, None, None)), [10, 11, 12]);
    }

    const RETENTION: Retention = Retention {
        max_count: 10,
        max_age: None,
        max_bytes: 1 << 20,
        dedupe_window: Duration::from_secs(600),
    };

    fn with_nonce(room: &str, n: u64, nonce: &str) -> Draft {
        Draft {
            nonce: Some(crate::message::Nonce::parse(nonce).unwrap()),
            reply_to: None,
            from_layer: false,
            ..draft(room, n)
        }
    }

    /// A nonce is stored once per room, within one batch and across batches; the duplicate is
    /// answered with the first message. Pages carry the room's last id and the store's epoch.
    fn stores_each_nonce_once(store: &dyn HistoryStore) {
        let first = store
            .append(vec![
                with_nonce("n", 1, "k1"),
                with_nonce("n", 2, "k1"),
                with_nonce("other", 3, "k1"),
            ])
            .unwrap();
        assert!(matches!(&first[0], Appended::Stored(m) if m.id == 1));
        assert!(matches!(&first[1], Appended::Duplicate(m) if m.id == 1 && m.message.get() == "1"));
        assert!(matches!(&first[2], Appended::Stored(m) if m.id == 1));
        let again = store
            .append(vec![with_nonce("n", 4, "k1"), with_nonce("n", 5, "k2")])
            .unwrap();
        assert!(matches!(&again[0], Appended::Duplicate(m) if m.id == 1 && m.message.get() == "1"));
        assert!(matches!(&again[1], Appended::Stored(m) if m.id == 2));
        let page = store.page(&query("n", 50, None, None)).unwrap();
        assert_eq!(ids(&page.messages), [1, 2]);
        assert_eq!(page.messages[1].nonce.as_ref().unwrap().as_str(), "k2");
        assert_eq!((page.last_id, &page.epoch), (2, &store.epoch()));
        // Forgotten past the window: stored again.
        assert_eq!(store.forget_nonces_before(now_ms() + 1).unwrap(), 3);
        let later = store.append(vec![with_nonce("n", 6, "k1")]).unwrap();
        assert!(matches!(&later[0], Appended::Stored(m) if m.id == 3));
    }

    #[test]
    fn memory_store() {
        behaves_as_a_history_store(&MemoryStore::new(RETENTION));
        stores_each_nonce_once(&MemoryStore::new(RETENTION));
    }

    #[test]
    fn sqlite_store_nonces_and_epoch_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let sync = crate::config::SqliteSync::Normal;
        let store = SqliteStore::open(dir.path(), RETENTION, sync).unwrap();
        store.append(vec![with_nonce("n", 1, "kept")]).unwrap();
        let epoch = store.epoch();
        drop(store);
        let reopened = SqliteStore::open(dir.path(), RETENTION, sync).unwrap();
        assert_eq!(reopened.epoch(), epoch, "the same file, the same epoch");
        let again = reopened.append(vec![with_nonce("n", 2, "kept")]).unwrap();
        assert!(matches!(&again[0], Appended::Duplicate(m) if m.id == 1));
        drop(reopened);
        let fresh = tempfile::tempdir().unwrap();
        let other = SqliteStore::open(fresh.path(), RETENTION, sync).unwrap();
        assert_ne!(other.epoch(), epoch, "a new file, a new epoch");
        stores_each_nonce_once(&other);
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
        assert_eq!(
            appended_ids(&reopened.append(vec![draft("a", 14)]).unwrap()),
            [14]
        );
        assert_eq!(page_ids(&reopened, &query("a", 50, None, None)), [13, 14]);
    }
}
