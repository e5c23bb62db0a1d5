//! History in process memory: the same ids, paging and retention as SQLite, gone on exit.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use super::{HistoryQuery, HistoryStore, Retention, StoreError, now_ms};
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
                log.messages.push_back(message.clone());
                if log.messages.len() as u64 > self.retention.max_count {
                    log.messages.pop_front();
                }
                message
            })
            .collect();
        Ok(stored)
    }

    fn page(&self, query: &HistoryQuery) -> Result<Vec<StoredMessage>, StoreError> {
        let rooms = self.rooms();
        let Some(log) = rooms.get(&query.room) else {
            return Ok(Vec::new());
        };
        let after = query.after.unwrap_or(0);
        let before = query.before.unwrap_or(u64::MAX);
        let in_range = log
            .messages
            .iter()
            .filter(|m| m.id > after && m.id < before);
        let page: Vec<StoredMessage> = if query.after.is_some() {
            in_range.take(query.limit).cloned().collect()
        } else {
            let mut latest: Vec<_> = in_range.rev().take(query.limit).cloned().collect();
            latest.reverse();
            latest
        };
        Ok(page)
    }

    fn prune_older_than(&self, cutoff_ms: u64) -> Result<usize, StoreError> {
        let mut pruned = 0;
        for log in self.rooms().values_mut() {
            while log.messages.front().is_some_and(|m| m.ts < cutoff_ms) {
                log.messages.pop_front();
                pruned += 1;
            }
        }
        Ok(pruned)
    }
}
