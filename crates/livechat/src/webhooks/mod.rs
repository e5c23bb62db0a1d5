//! Webhooks: what happened (messages, who came and went), told to the app after the fact, at
//! least once, in order per room, batched and signed (docs/hooks.md).
//!
//! Events are recorded in an outbox that is part of the store (`Outbox`: a SQLite table, or a
//! Redis stream read with a consumer group), a message's event with the message itself; the
//! `sender` reads them in order and posts them until the app acknowledges them. Events carry no
//! id until they are read: the outbox gives each one from where it keeps it (stable across
//! deliveries, so the app can deduplicate on it).

pub mod sender;

use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::future::BoxFuture;
use serde::Serialize;

use crate::change::Changed;
use crate::message::{Author, StoredMessage};
use crate::room::RoomName;

/// The kinds of event the app can be told (`LIVECHAT_WEBHOOK_EVENTS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum EventKind {
    Message,
    Join,
    Leave,
    RoomOccupied,
    RoomVacated,
    Edited,
    Deleted,
    Ban,
    Disconnect,
}

/// Which kinds are told, and how much the outbox may hold.
#[derive(Debug, Clone, Copy)]
pub struct WebhookSettings {
    kinds: u16,
    /// Bytes of event bodies the outbox holds at most; past it, new events are dropped.
    pub max_bytes: u64,
}

impl WebhookSettings {
    /// `kinds` empty: all of them.
    pub fn new(kinds: &[EventKind], max_bytes: u64) -> Self {
        let all = [
            EventKind::Message,
            EventKind::Join,
            EventKind::Leave,
            EventKind::RoomOccupied,
            EventKind::RoomVacated,
            EventKind::Edited,
            EventKind::Deleted,
            EventKind::Ban,
            EventKind::Disconnect,
        ];
        let kinds = if kinds.is_empty() { &all[..] } else { kinds };
        Self {
            kinds: kinds.iter().fold(0, |bits, kind| bits | 1 << *kind as u16),
            max_bytes,
        }
    }

    pub fn wants(&self, kind: EventKind) -> bool {
        self.kinds & (1 << kind as u16) != 0
    }

    /// Whether any of who comes and goes is told (the roster then keeps track for the app).
    pub fn wants_presence(&self) -> bool {
        [
            EventKind::Join,
            EventKind::Leave,
            EventKind::RoomOccupied,
            EventKind::RoomVacated,
        ]
        .iter()
        .any(|kind| self.wants(*kind))
    }
}

/// An event for the app, before the outbox gives it an id: its time, and its JSON body without
/// `id` (`{"type": ..., "room": ..., "ts": ..., ...}`).
#[derive(Debug, Clone)]
pub struct Event {
    pub ts: u64,
    pub body: String,
}

impl Event {
    /// `message`: a message was stored.
    pub fn message(message: &StoredMessage) -> Self {
        Self::of(
            EventKind::Message,
            &message.room,
            message.ts,
            None,
            Some(message),
        )
    }

    /// `edited` (`{"id", "message", "edited_ts", "by"}`) and `deleted` (`{"id", "by"}`) for the
    /// app, with their kind; reactions are not told.
    pub fn of_change(changed: &Changed, now: u64) -> Option<(EventKind, Self)> {
        let (kind, room, detail) = match changed {
            Changed::Edited {
                room,
                id,
                message,
                edited_ts,
                by,
            } => (
                EventKind::Edited,
                room,
                serde_json::json!({"id": id, "message": message, "edited_ts": edited_ts, "by": by}),
            ),
            Changed::Deleted { room, id, by } => (
                EventKind::Deleted,
                room,
                serde_json::json!({"id": id, "by": by}),
            ),
            Changed::Reacted { .. } => return None,
        };
        Some((kind, Self::detailed(kind, Some(room), now, detail)))
    }

    /// An event with a `detail` object beside its type, room (`null`: every room) and time.
    pub fn detailed(
        kind: EventKind,
        room: Option<&RoomName>,
        ts: u64,
        detail: serde_json::Value,
    ) -> Self {
        let mut body = serde_json::json!({"type": kind, "room": room, "ts": ts});
        if let (Some(body), serde_json::Value::Object(detail)) = (body.as_object_mut(), detail) {
            body.extend(detail);
        }
        Self {
            ts,
            body: body.to_string(),
        }
    }

    /// `join`, `leave` (with the user), `room_occupied`, `room_vacated`.
    pub fn presence(kind: EventKind, room: &RoomName, ts: u64, user: Option<&Author>) -> Self {
        Self::of(kind, room, ts, user, None)
    }

    fn of(
        kind: EventKind,
        room: &RoomName,
        ts: u64,
        user: Option<&Author>,
        message: Option<&StoredMessage>,
    ) -> Self {
        #[derive(Serialize)]
        struct Body<'a> {
            #[serde(rename = "type")]
            kind: EventKind,
            room: &'a RoomName,
            ts: u64,
            #[serde(skip_serializing_if = "Option::is_none")]
            user: Option<&'a Author>,
            #[serde(skip_serializing_if = "Option::is_none")]
            message: Option<&'a StoredMessage>,
        }
        let body = Body {
            kind,
            room,
            ts,
            user,
            message,
        };
        match crate::json::to_string(&body) {
            Ok(body) => Self { ts, body },
            // Logged and counted already: the app is told the event exists but not its details.
            Err(_) => Self::detailed(
                kind,
                Some(room),
                ts,
                serde_json::json!({"error": "the server could not encode this event"}),
            ),
        }
    }
}

/// An event read from the outbox for delivery.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Unique, and the same each time this event is read.
    pub id: String,
    pub ts: u64,
    /// The body without `id`.
    pub body: String,
}

impl Recorded {
    /// The event as the app receives it: `{"id": ..., ...}`.
    pub fn json(&self) -> String {
        let rest = self.body.strip_prefix('{').unwrap_or("}");
        let id = serde_json::Value::from(self.id.as_str());
        match rest {
            "}" => format!("{{\"id\":{id}}}"),
            rest => format!("{{\"id\":{id},{rest}"),
        }
    }
}

/// What an outbox holds, against its bound: the bytes and count of events waiting, and the
/// events dropped because they would have gone past it. Counted in memory beside the store
/// (set from what the store holds when it opens).
#[derive(Debug, Default)]
pub struct Budget {
    max_bytes: u64,
    bytes: AtomicU64,
    events: AtomicU64,
    dropped: AtomicU64,
}

impl Budget {
    pub fn new(max_bytes: u64, bytes: u64, events: u64) -> Self {
        Self {
            max_bytes,
            bytes: AtomicU64::new(bytes),
            events: AtomicU64::new(events),
            dropped: AtomicU64::new(0),
        }
    }

    /// Whether an event of `bytes` fits besides `also` bytes about to be added; if not, it is
    /// counted as dropped.
    pub fn fits(&self, bytes: u64, also: u64) -> bool {
        let fits = self.bytes.load(Ordering::Relaxed) + also + bytes <= self.max_bytes;
        if !fits {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        fits
    }

    /// Events were recorded (or, negative, delivered and forgotten).
    pub fn added(&self, bytes: u64, events: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.events.fetch_add(events, Ordering::Relaxed);
    }

    pub fn removed(&self, bytes: u64, events: u64) {
        let sub = |counter: &AtomicU64, n: u64| {
            let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                Some(held.saturating_sub(n))
            });
        };
        sub(&self.bytes, bytes);
        sub(&self.events, events);
    }

    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("webhook outbox: {0}")]
pub struct OutboxError(pub String);

/// Where events wait for the app: part of the store, durable as it is.
pub trait Outbox: Send + Sync + 'static {
    /// Records events that are not recorded with messages (who came and went); past the bytes
    /// bound they are dropped (and counted in `dropped`).
    fn record(&self, events: Vec<Event>) -> BoxFuture<'static, Result<(), OutboxError>>;

    /// Up to `max` events not yet acknowledged, the oldest first; the same ones again until they
    /// are. Empty when this node is not the one that sends (Redis: another node holds the lease).
    fn read(&self, max: usize) -> BoxFuture<'static, Result<Vec<Recorded>, OutboxError>>;

    /// The app has `delivered`: they are gone from the outbox.
    fn ack(&self, delivered: &[Recorded]) -> BoxFuture<'static, Result<(), OutboxError>>;

    /// Events waiting in the outbox.
    fn pending(&self) -> BoxFuture<'static, Result<u64, OutboxError>>;

    /// Events dropped since start because the outbox was full.
    fn dropped(&self) -> u64;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    #[test]
    fn events_read_back_with_their_id_first() {
        let message = StoredMessage {
            id: 7,
            room: RoomName::parse("lobby").unwrap(),
            message: RawValue::from_string("\"hi\"".into()).unwrap(),
            ts: 1000,
            user: None,
            nonce: None,
            extra: None,
        };
        let event = Event::message(&message);
        let recorded = Recorded {
            id: "e1-5".into(),
            ts: event.ts,
            body: event.body,
        };
        assert_eq!(
            recorded.json(),
            r#"{"id":"e1-5","type":"message","room":"lobby","ts":1000,"message":{"id":7,"room":"lobby","message":"hi","ts":1000}}"#
        );
        let join = Event::presence(
            EventKind::Join,
            &message.room,
            5,
            Some(&Author {
                id: Some("1".into()),
                name: None,
            }),
        );
        assert_eq!(
            join.body,
            r#"{"type":"join","room":"lobby","ts":5,"user":{"id":"1"}}"#
        );
        let settings = WebhookSettings::new(&[EventKind::Message], 10);
        assert!(settings.wants(EventKind::Message) && !settings.wants_presence());
        assert!(WebhookSettings::new(&[], 10).wants(EventKind::RoomVacated));
    }
}
