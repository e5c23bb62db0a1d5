//! History in process memory: the same ids, paging and retention as SQLite, gone on exit (so each
//! run is a new epoch).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use super::{
    Appended, HistoryQuery, HistoryStore, Page, PageBuilder, RecentRoom, Retention, StoreError,
    now_ms,
};
use crate::epoch::{Epoch, new_epoch};
use crate::message::{Draft, Nonce, StoredMessage};
use crate::room::RoomName;
use crate::webhooks::{Budget, Event, EventKind, Recorded, WebhookSettings};

/// Nonces remembered at most; past it the oldest are forgotten before the window ends (a
/// flood of distinct nonces cannot grow the process without bound).
const MAX_NONCES: usize = 100_000;

pub struct MemoryStore {
    state: Mutex<State>,
    retention: Retention,
    epoch: Epoch,
    outbox: Option<(WebhookSettings, Budget)>,
}

#[derive(Default)]
struct State {
    rooms: HashMap<RoomName, RoomLog>,
    /// Nonce -> (id, ts) of the message first stored with it.
    nonces: HashMap<(RoomName, Nonce), (u64, u64)>,
    /// The same nonces, oldest first, to forget them in order.
    nonce_order: VecDeque<(u64, RoomName, Nonce)>,
    /// Webhook events waiting, with their numbers, and the next number.
    events: VecDeque<(u64, Event)>,
    next_event: u64,
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

    fn find(&self, id: u64) -> Option<&StoredMessage> {
        let index = self
            .messages
            .binary_search_by_key(&id, |message| message.id)
            .ok()?;
        self.messages.get(index)
    }

    fn append(&mut self, draft: Draft, ts: u64, retention: &Retention) -> StoredMessage {
        self.last_id += 1;
        let message = draft.stored(self.last_id, ts);
        self.bytes += message.stored_bytes() as u64;
        self.messages.push_back(message.clone());
        // The newest message stays, whatever its size, unless none is to be kept.
        let floor = usize::from(retention.max_count > 0);
        while self.messages.len() > floor
            && (self.messages.len() as u64 > retention.max_count
                || self.bytes > retention.max_bytes)
        {
            self.pop_oldest();
        }
        message
    }
}

impl State {
    fn record(&mut self, event: Event) {
        self.next_event += 1;
        self.events.push_back((self.next_event, event));
    }

    fn remember(&mut self, message: &StoredMessage) {
        let Some(nonce) = &message.nonce else { return };
        if self.nonce_order.len() >= MAX_NONCES {
            self.forget_oldest();
        }
        let key = (message.room.clone(), nonce.clone());
        self.nonces.insert(key, (message.id, message.ts));
        self.nonce_order
            .push_back((message.ts, message.room.clone(), nonce.clone()));
    }

    fn forget_oldest(&mut self) {
        if let Some((_, room, nonce)) = self.nonce_order.pop_front() {
            self.nonces.remove(&(room, nonce));
        }
    }

    /// The message first stored with the draft's nonce, if the window still holds it.
    fn original(&self, draft: &Draft, since_ms: u64) -> Option<StoredMessage> {
        let nonce = draft.nonce.as_ref()?;
        let &(id, ts) = self.nonces.get(&(draft.room.clone(), nonce.clone()))?;
        if ts < since_ms {
            return None;
        }
        let stored = self.rooms.get(&draft.room).and_then(|log| log.find(id));
        Some(stored.cloned().unwrap_or_else(|| StoredMessage {
            id,
            room: draft.room.clone(),
            message: draft.message.clone(),
            ts,
            user: draft.user.clone(),
            nonce: draft.nonce.clone(),
        }))
    }
}

impl MemoryStore {
    pub fn new(retention: Retention) -> Self {
        Self {
            state: Mutex::default(),
            retention,
            epoch: new_epoch(),
            outbox: None,
        }
    }

    /// Records webhook events from now on (in memory, as the messages are).
    pub fn with_outbox(mut self, settings: WebhookSettings) -> Self {
        self.outbox = Some((settings, Budget::new(settings.max_bytes, 0, 0)));
        self
    }

    /// Records `event` if the outbox takes it.
    fn offer(&self, state: &mut State, event: Event) {
        if let Some((_, budget)) = &self.outbox
            && budget.fits(event.body.len() as u64, 0)
        {
            budget.added(event.body.len() as u64, 1);
            state.record(event);
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl HistoryStore for MemoryStore {
    fn append(&self, batch: Vec<Draft>) -> Result<Vec<Appended>, StoreError> {
        let ts = now_ms();
        let since_ms = ts.saturating_sub(self.retention.dedupe_window.as_millis() as u64);
        let mut state = self.state();
        let appended = batch
            .into_iter()
            .map(|draft| {
                if !self.retention.dedupe_window.is_zero()
                    && let Some(original) = state.original(&draft, since_ms)
                {
                    return Appended::Duplicate(original);
                }
                let log = state.rooms.entry(draft.room.clone()).or_default();
                let message = log.append(draft, ts, &self.retention);
                state.remember(&message);
                if self
                    .outbox
                    .as_ref()
                    .is_some_and(|(settings, _)| settings.wants(EventKind::Message))
                {
                    self.offer(&mut state, Event::message(&message));
                }
                Appended::Stored(message)
            })
            .collect();
        Ok(appended)
    }

    fn page(&self, query: &HistoryQuery) -> Result<Page, StoreError> {
        let state = self.state();
        let Some(log) = state.rooms.get(&query.room) else {
            return Ok(PageBuilder::new(query).finish(0, self.epoch.clone()));
        };
        let after = query.after.unwrap_or(0);
        let before = query.before.unwrap_or(u64::MAX);
        let in_range = |m: &&StoredMessage| m.id > after && m.id < before;
        let mut page = PageBuilder::new(query);
        let read_order: Box<dyn Iterator<Item = &StoredMessage>> = match query.newest_first {
            true => Box::new(log.messages.iter().rev()),
            false => Box::new(log.messages.iter()),
        };
        for message in read_order.filter(in_range) {
            if !page.offer(message.clone()) {
                break;
            }
        }
        Ok(page.finish(log.last_id, self.epoch.clone()))
    }

    fn prune_older_than(&self, cutoff_ms: u64) -> Result<usize, StoreError> {
        let mut pruned = 0;
        for log in self.state().rooms.values_mut() {
            while log.messages.front().is_some_and(|m| m.ts < cutoff_ms) {
                log.pop_oldest();
                pruned += 1;
            }
        }
        Ok(pruned)
    }

    fn forget_nonces_before(&self, cutoff_ms: u64) -> Result<usize, StoreError> {
        let mut state = self.state();
        let mut forgotten = 0;
        while state
            .nonce_order
            .front()
            .is_some_and(|(ts, _, _)| *ts < cutoff_ms)
        {
            state.forget_oldest();
            forgotten += 1;
        }
        Ok(forgotten)
    }

    fn epoch(&self) -> Epoch {
        self.epoch.clone()
    }

    fn recent_rooms(&self, limit: usize) -> Result<Vec<RecentRoom>, StoreError> {
        let mut rooms: Vec<RecentRoom> = self
            .state()
            .rooms
            .iter()
            .filter_map(|(room, log)| {
                let newest = log.messages.back()?;
                Some(RecentRoom {
                    room: room.clone(),
                    ts: newest.ts,
                })
            })
            .collect();
        rooms.sort_by(|a, b| b.ts.cmp(&a.ts).then_with(|| a.room.cmp(&b.room)));
        rooms.truncate(limit);
        Ok(rooms)
    }

    fn record_events(&self, events: &[Event]) -> Result<(), StoreError> {
        let mut state = self.state();
        for event in events {
            self.offer(&mut state, event.clone());
        }
        Ok(())
    }

    fn read_events(&self, max: usize) -> Result<Vec<Recorded>, StoreError> {
        let state = self.state();
        Ok(state
            .events
            .iter()
            .take(max)
            .map(|(seq, event)| Recorded {
                id: format!("{}-{seq}", self.epoch),
                ts: event.ts,
                body: event.body.clone(),
            })
            .collect())
    }

    fn forget_events(&self, delivered: &[Recorded]) -> Result<(), StoreError> {
        let mut state = self.state();
        let (mut bytes, mut count) = (0, 0);
        for _ in delivered {
            if let Some((_, event)) = state.events.pop_front() {
                bytes += event.body.len() as u64;
                count += 1;
            }
        }
        if let Some((_, budget)) = &self.outbox {
            budget.removed(bytes, count);
        }
        Ok(())
    }

    fn outbox_budget(&self) -> Option<&Budget> {
        self.outbox.as_ref().map(|(_, budget)| budget)
    }
}
