//! History in process memory: the same ids, paging and retention as SQLite, gone on exit.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use super::{HistoryQuery, HistoryStore, Page, PageBuilder, Retention, StoreError, now_ms};
use crate::message::{Draft, StoredMessage};
use crate::room::RoomName;

pub struct MemoryStore {
    rooms: Mutex<HashMap<RoomName, RoomLog>>,
    retention: Retention,
}

#[derive(Default)]
struct RoomLog {
    last_id: u64,
    messages: VecDeque<StoredMessage>,
    /// `stored_bytes` of `messages`.
    bytes: u64,
}

impl RoomLog {
    fn pop_oldest(&mut self) -> bool {
        match self.messages.pop_front() {
            Some(message) => {
                self.bytes -= message.stored_bytes() as u64;
                true
            }
            None => false,
        }
    }
}

impl MemoryStore {
    pub fn new(retention: Retention) -> Self {
        Self {
            rooms: Mutex::default(),
            retention,
        }
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<RoomName, RoomLog>> {
        self.rooms
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl HistoryStore for MemoryStore {
    fn append(&self, batch: Vec<Draft>) -> Result<Vec<StoredMessage>, StoreError> {
        let ts = now_ms();
        let mut rooms = self.rooms();
        let stored: Vec<StoredMessage> = batch
            .into_iter()
            .map(|draft| {
                let log = rooms.entry(draft.room.clone()).or_default();
                log.last_id += 1;
                let message = StoredMessage {
                    id: log.last_id,
                    room: draft.room,
                    message: draft.message,
                    ts,
                    user: draft.user,
                };
                log.bytes += message.stored_bytes() as u64;
                log.messages.push_back(message.clone());
                // The newest message stays, whatever its size.
                while log.messages.len() > 1
                    && (log.messages.len() as u64 > self.retention.max_count
                        || log.bytes > self.retention.max_bytes)
                {
                    log.pop_oldest();
                }
                message
            })
            .collect();
        Ok(stored)
    }

    fn page(&self, query: &HistoryQuery) -> Result<Page, StoreError> {
        let rooms = self.rooms();
        let Some(log) = rooms.get(&query.room) else {
            return Ok(Page::default());
        };
        let after = query.after.unwrap_or(0);
        let before = query.before.unwrap_or(u64::MAX);
        let in_range = |m: &&StoredMessage| m.id > after && m.id < before;
        let mut page = PageBuilder::new(query);
        let read_order: Box<dyn Iterator<Item = &StoredMessage>> = match query.newest_first() {
            true => Box::new(log.messages.iter().rev()),
            false => Box::new(log.messages.iter()),
        };
        for message in read_order.filter(in_range) {
            if !page.offer(message.clone()) {
                break;
            }
        }
        Ok(page.finish())
    }

    fn prune_older_than(&self, cutoff_ms: u64) -> Result<usize, StoreError> {
        let mut pruned = 0;
        for log in self.rooms().values_mut() {
            while log.messages.front().is_some_and(|m| m.ts < cutoff_ms) {
                log.pop_oldest();
                pruned += 1;
            }
        }
        Ok(pruned)
    }
}
