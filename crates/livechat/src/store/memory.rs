//! History in process memory: the same ids, paging and retention as SQLite, gone on exit (so each
//! run is a new epoch).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use super::{
    Appended, Authored, HistoryQuery, HistoryStore, MAX_DIRECTS, Page, PageBuilder, Place,
    ReadPosition, RecentRoom, Refused, Retention, RoomStats, StoreError, now_ms,
};
use crate::change::{
    Change, ChangeKind, ChangeRefused, Changed, MAX_EMOJI_PER_MESSAGE, may_change,
};
use crate::epoch::{Epoch, new_epoch};
use crate::message::{Draft, Extra, Nonce, ReactionCount, StoredMessage};
use crate::moderation::Ban;
use crate::presence::user_key;
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
    /// Read positions by user, then room.
    reads: HashMap<String, HashMap<RoomName, u64>>,
    bans: HashMap<String, Ban>,
    /// Direct-message rooms by user, with when each was opened.
    directs: HashMap<String, Vec<(RoomName, u64)>>,
}

#[derive(Default)]
struct RoomLog {
    last_id: u64,
    messages: VecDeque<StoredMessage>,
    /// `stored_bytes` of `messages`.
    bytes: u64,
    /// The room's change counter, and for each changed message the room's last id and the
    /// counter at its last change.
    changes: u64,
    changed: HashMap<u64, (u64, u64)>,
    /// Reactions by message, emoji, user key.
    reactions: HashMap<u64, BTreeMap<String, BTreeSet<String>>>,
}

impl RoomLog {
    fn pop_oldest(&mut self) -> bool {
        match self.messages.pop_front() {
            Some(message) => {
                self.bytes -= message.stored_bytes() as u64;
                self.changed.remove(&message.id);
                self.reactions.remove(&message.id);
                true
            }
            None => false,
        }
    }

    fn find(&self, id: u64) -> Option<&StoredMessage> {
        let index = self.index(id)?;
        self.messages.get(index)
    }

    fn index(&self, id: u64) -> Option<usize> {
        self.messages
            .binary_search_by_key(&id, |message| message.id)
            .ok()
    }

    /// `message` with its reactions, as `reader` sees them.
    fn shown(&self, message: &StoredMessage, reader: Option<&str>) -> StoredMessage {
        let mut shown = message.clone();
        if let Some(reactions) = self.reactions.get(&message.id).filter(|r| !r.is_empty()) {
            let counted = reactions
                .iter()
                .map(|(emoji, users)| {
                    let me = reader.is_some_and(|reader| users.contains(reader));
                    let count = ReactionCount {
                        count: users.len() as u64,
                        me,
                    };
                    (emoji.clone(), count)
                })
                .collect();
            shown.extra_mut().reactions = Some(counted);
        }
        shown
    }

    fn change(
        &mut self,
        change: &Change,
        window: Option<Duration>,
    ) -> Result<Changed, ChangeRefused> {
        let id = change.id;
        let now = now_ms();
        let Some(index) = self.index(id) else {
            return Err(match id {
                id if id == 0 || id > self.last_id => ChangeRefused::NotFound { id },
                id => ChangeRefused::Gone { id },
            });
        };
        let message = &self.messages[index];
        may_change(
            change,
            message.user.as_deref(),
            message.is_deleted(),
            message.ts,
            now,
            window,
        )?;
        let changed = match &change.kind {
            ChangeKind::React { emoji, on } => {
                let user = user_key(&change.by)
                    .map(|key| key.to_string())
                    .unwrap_or_default();
                let reactions = self.reactions.entry(id).or_default();
                if *on
                    && !reactions.contains_key(emoji.as_str())
                    && reactions.len() >= MAX_EMOJI_PER_MESSAGE
                {
                    return Err(ChangeRefused::TooManyEmoji { id });
                }
                let users = reactions.entry(emoji.as_str().to_owned()).or_default();
                match on {
                    true => users.insert(user),
                    false => users.remove(&user),
                };
                let count = users.len() as u64;
                if count == 0 {
                    reactions.remove(emoji.as_str());
                }
                Changed::Reacted {
                    room: change.room.clone(),
                    id,
                    emoji: emoji.clone(),
                    user: change.by.clone(),
                    count,
                    on: *on,
                }
            }
            ChangeKind::Edit(text) => {
                let message = &mut self.messages[index];
                let before = message.stored_bytes() as u64;
                message.message = text.clone();
                message.extra_mut().edited_ts = Some(now);
                self.bytes = self.bytes + message.stored_bytes() as u64 - before;
                Changed::Edited {
                    room: change.room.clone(),
                    id,
                    message: text.clone(),
                    edited_ts: now,
                    by: change.by.clone(),
                }
            }
            ChangeKind::Delete => {
                let message = &mut self.messages[index];
                self.bytes -= message.stored_bytes() as u64;
                *message = StoredMessage {
                    message: serde_json::value::RawValue::from_string("null".into())
                        .expect("null is JSON"),
                    user: None,
                    nonce: None,
                    extra: Some(Box::new(Extra {
                        deleted: true,
                        ..Extra::default()
                    })),
                    ..message.clone()
                };
                self.reactions.remove(&id);
                Changed::Deleted {
                    room: change.room.clone(),
                    id,
                    by: change.by.clone(),
                }
            }
        };
        self.changes += 1;
        self.changed.insert(id, (self.last_id, self.changes));
        Ok(changed)
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
            extra: Extra::replying(draft.reply_to),
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
                if let Some(target) = draft.reply_to
                    && log.find(target).is_none()
                {
                    return Appended::Refused(Refused::NoReplyTarget(target));
                }
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
            if !page.offer(log.shown(message, query.reader.as_deref())) {
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

    fn change(
        &self,
        change: &Change,
        edit_window: Option<Duration>,
    ) -> Result<Result<Changed, ChangeRefused>, StoreError> {
        let mut state = self.state();
        let Some(log) = state.rooms.get_mut(&change.room) else {
            return Ok(Err(ChangeRefused::NotFound { id: change.id }));
        };
        let changed = log.change(change, edit_window);
        if let Ok(changed) = &changed
            && let Some((settings, _)) = &self.outbox
            && let Some((kind, event)) = Event::of_change(changed, now_ms())
            && settings.wants(kind)
        {
            self.offer(&mut state, event);
        }
        Ok(changed)
    }

    fn changed_since(
        &self,
        room: &RoomName,
        through: u64,
        reader: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let state = self.state();
        let Some(log) = state.rooms.get(room) else {
            return Ok(Vec::new());
        };
        let mut changed: Vec<(u64, u64)> = log
            .changed
            .iter()
            .filter(|(id, (after, _))| **id <= through && *after >= through)
            .map(|(id, (_, seq))| (*seq, *id))
            .collect();
        changed.sort_unstable();
        Ok(changed
            .into_iter()
            .filter_map(|(_, id)| log.find(id))
            .take(limit)
            .map(|message| log.shown(message, reader))
            .collect())
    }

    fn bans(&self) -> Result<Vec<Ban>, StoreError> {
        Ok(self.state().bans.values().cloned().collect())
    }

    fn put_ban(&self, ban: &Ban) -> Result<(), StoreError> {
        let now = now_ms();
        let mut state = self.state();
        state.bans.retain(|_, ban| ban.in_force(now));
        state.bans.insert(ban.id.clone(), ban.clone());
        Ok(())
    }

    fn remove_ban(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.state().bans.remove(id).is_some())
    }

    fn open_direct(&self, room: &RoomName) -> Result<(), StoreError> {
        let Some((a, b)) = room.direct_users() else {
            return Ok(());
        };
        let mut state = self.state();
        for user in [a, b] {
            let list = state.directs.entry(user.to_owned()).or_default();
            list.retain(|(kept, _)| kept != room);
            list.insert(0, (room.clone(), now_ms()));
            list.truncate(MAX_DIRECTS);
        }
        Ok(())
    }

    fn directs(&self, user: &str) -> Result<Vec<RoomName>, StoreError> {
        let state = self.state();
        let list = state.directs.get(user).into_iter().flatten();
        Ok(list.map(|(room, _)| room.clone()).collect())
    }

    fn room_stats(&self, room: &RoomName) -> Result<RoomStats, StoreError> {
        let state = self.state();
        Ok(state
            .rooms
            .get(room)
            .map_or_else(RoomStats::default, |log| RoomStats {
                messages: log.messages.len() as u64,
                bytes: log.bytes,
                last_id: log.last_id,
            }))
    }

    fn authored(
        &self,
        user: &str,
        from: Option<&Place>,
        limit: usize,
    ) -> Result<Authored, StoreError> {
        let state = self.state();
        let mut rooms: Vec<&RoomName> = state.rooms.keys().collect();
        rooms.sort();
        let mut authored = Authored::default();
        let places = rooms.into_iter().flat_map(|room| {
            state.rooms[room]
                .messages
                .iter()
                .map(move |message| (room, message))
        });
        let mut last = None;
        for (room, message) in places
            .filter(|(room, message)| {
                from.is_none_or(|from| (*room, message.id) > (&from.room, from.id))
            })
            .take(limit)
        {
            authored.scanned += 1;
            let theirs = message
                .user
                .as_deref()
                .is_some_and(|author| author.is(user));
            let place = Place {
                room: room.clone(),
                id: message.id,
            };
            if theirs {
                authored.found.push(place.clone());
            }
            last = Some(place);
        }
        if authored.scanned as usize == limit {
            authored.next = last;
        }
        Ok(authored)
    }

    fn mark_read(&self, user: &str, room: &RoomName, id: u64) -> Result<u64, StoreError> {
        let mut state = self.state();
        let last_id = state.rooms.get(room).map_or(0, |log| log.last_id);
        let position = state
            .reads
            .entry(user.to_owned())
            .or_default()
            .entry(room.clone())
            .or_default();
        *position = (*position).max(id.min(last_id));
        Ok(*position)
    }

    fn read_positions(&self, user: &str) -> Result<Vec<ReadPosition>, StoreError> {
        let state = self.state();
        Ok(state
            .reads
            .get(user)
            .into_iter()
            .flatten()
            .map(|(room, read_id)| ReadPosition {
                room: room.clone(),
                read_id: *read_id,
                last_id: state.rooms.get(room).map_or(0, |log| log.last_id),
            })
            .collect())
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

    fn probe(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn close(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
