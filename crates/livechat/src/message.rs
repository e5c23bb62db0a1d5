//! Messages: what a client publishes, what the store keeps, and the frames sent to subscribers.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::change::Emoji;
use crate::outgoing::OutgoingFrame;
use crate::room::RoomName;

/// A message as accepted from a client, before the store gives it an id and a timestamp.
#[derive(Debug)]
pub struct Draft {
    pub room: RoomName,
    /// The client's `message` value, kept as the exact JSON text it sent.
    pub message: Box<RawValue>,
    /// Who wrote it, as the server knows them (never taken from the message itself).
    pub user: Option<Arc<Author>>,
    /// The client's idempotency key: a second publish with it to the same room, within the
    /// dedupe window, is answered with the first one instead of being stored again.
    pub nonce: Option<Nonce>,
    /// The message it answers, in the same room (`{"reply_to": ID}`).
    pub reply_to: Option<u64>,
    /// It came from the Django Channels layer (`crate::bridge`), so it is not sent back there.
    pub from_layer: bool,
}

/// A message that has been stored: it has a per-room id that only grows and a server timestamp.
/// A deleted one is a tombstone: its text, author and nonce are gone, and it is written
/// `{"id", "room", "ts", "deleted": true}`. Its schema is `StoredMessageShape`'s.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub id: u64,
    pub room: RoomName,
    /// Any JSON value, as it was sent.
    pub message: Box<RawValue>,
    /// Milliseconds since the Unix epoch, taken by the server when it stored the message.
    pub ts: u64,
    pub user: Option<Arc<Author>>,
    /// The nonce it was published with, if any.
    pub nonce: Option<Nonce>,
    /// What it answers and what became of it since (`None`: nothing; most messages).
    pub extra: Option<Box<Extra>>,
}

/// What a message answers and what became of it after it was stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extra {
    /// The id of the message it answers, in the same room.
    pub reply_to: Option<u64>,
    /// When it was last edited (ms since the Unix epoch).
    pub edited_ts: Option<u64>,
    /// Deleted: a tombstone.
    pub deleted: bool,
    /// Reactions, by emoji: how many users, and whether the reader is one of them.
    pub reactions: Option<Reactions>,
}

/// A stored message as it is written (`StoredMessage`'s `Serialize`), for the OpenAPI document.
/// A deleted message has only `id`, `room`, `ts` and `deleted`.
#[derive(utoipa::ToSchema)]
#[schema(as = StoredMessage)]
#[allow(dead_code)]
struct StoredMessageShape {
    id: u64,
    #[schema(value_type = String)]
    room: String,
    /// Any JSON value, as it was sent (absent when deleted).
    #[schema(value_type = Value, required = false)]
    message: Option<serde_json::Value>,
    /// Milliseconds since the Unix epoch, taken by the server when it stored the message.
    ts: u64,
    #[schema(required = false)]
    user: Option<Author>,
    /// The nonce it was published with.
    #[schema(required = false)]
    nonce: Option<String>,
    /// The id of the message it answers, in the same room.
    #[schema(required = false)]
    reply_to: Option<u64>,
    /// When it was last edited (ms since the Unix epoch).
    #[schema(required = false)]
    edited_ts: Option<u64>,
    /// Deleted: a tombstone.
    #[schema(required = false)]
    deleted: Option<bool>,
    /// Reactions by emoji: `{"count", "me"}` (`me`: the reader is among them).
    #[schema(required = false)]
    reactions: Option<std::collections::BTreeMap<String, ReactionCount>>,
}

impl utoipa::PartialSchema for StoredMessage {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        <StoredMessageShape as utoipa::PartialSchema>::schema()
    }
}

impl utoipa::ToSchema for StoredMessage {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("StoredMessage")
    }

    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        <StoredMessageShape as utoipa::ToSchema>::schemas(schemas);
    }
}

/// A message's reactions, by emoji (sorted).
pub type Reactions = std::collections::BTreeMap<String, ReactionCount>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ReactionCount {
    pub count: u64,
    /// The reader reacted so.
    pub me: bool,
}

impl Serialize for StoredMessage {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let extra = self.extra.as_deref();
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("id", &self.id)?;
        map.serialize_entry("room", &self.room)?;
        if extra.is_some_and(|extra| extra.deleted) {
            map.serialize_entry("ts", &self.ts)?;
            map.serialize_entry("deleted", &true)?;
            return map.end();
        }
        map.serialize_entry("message", &self.message)?;
        map.serialize_entry("ts", &self.ts)?;
        if let Some(user) = &self.user {
            map.serialize_entry("user", user)?;
        }
        if let Some(nonce) = &self.nonce {
            map.serialize_entry("nonce", nonce)?;
        }
        if let Some(extra) = extra {
            if let Some(reply_to) = extra.reply_to {
                map.serialize_entry("reply_to", &reply_to)?;
            }
            if let Some(edited_ts) = extra.edited_ts {
                map.serialize_entry("edited_ts", &edited_ts)?;
            }
            if let Some(reactions) = &extra.reactions {
                map.serialize_entry("reactions", reactions)?;
            }
        }
        map.end()
    }
}

/// A publish's idempotency key: 1 to 64 characters, none of them a control character.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Nonce(Arc<str>);

impl Nonce {
    pub const MAX_CHARS: usize = 64;

    pub fn parse(text: &str) -> Result<Self, BadPublish> {
        let chars = text.chars().count();
        if chars == 0 || chars > Self::MAX_CHARS || text.chars().any(char::is_control) {
            return Err(BadPublish::InvalidNonce);
        }
        Ok(Self(Arc::from(text)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl StoredMessage {
    /// What it counts for in byte bounds (history pages, retention): its JSON and its author's.
    pub fn stored_bytes(&self) -> usize {
        stored_bytes(&self.message, self.user.as_deref(), self.nonce.as_ref())
    }

    pub fn is_deleted(&self) -> bool {
        self.extra.as_ref().is_some_and(|extra| extra.deleted)
    }

    pub fn reply_to(&self) -> Option<u64> {
        self.extra.as_ref().and_then(|extra| extra.reply_to)
    }

    /// What it answers and what became of it, to be filled in.
    pub fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }
}

impl Extra {
    /// Only what a message answers (none: no extra at all).
    pub fn replying(reply_to: Option<u64>) -> Option<Box<Self>> {
        reply_to.map(|reply_to| {
            Box::new(Self {
                reply_to: Some(reply_to),
                ..Self::default()
            })
        })
    }
}

impl Draft {
    /// The message as stored, numbered `id` at `ts`.
    pub fn stored(self, id: u64, ts: u64) -> StoredMessage {
        StoredMessage {
            id,
            room: self.room,
            message: self.message,
            ts,
            user: self.user,
            nonce: self.nonce,
            extra: Extra::replying(self.reply_to),
        }
    }

    /// The same, before it is stored.
    pub fn stored_bytes(&self) -> usize {
        stored_bytes(&self.message, self.user.as_deref(), self.nonce.as_ref())
    }
}

fn stored_bytes(message: &RawValue, user: Option<&Author>, nonce: Option<&Nonce>) -> usize {
    message.get().len()
        + user.map_or(0, |user| user.to_json().len())
        + nonce.map_or(0, |nonce| nonce.as_str().len())
}

/// The author of a message: `id` (and `name`, if the token has one) from a verified token, or
/// only a `name` the client chose for itself; a reader tells them apart by the `id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Author {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Author {
    /// The JSON kept beside a stored message. Two optional strings cannot fail to be written;
    /// if they ever did, that is logged and counted, and `{}` (an author with neither) is kept.
    pub fn to_json(&self) -> String {
        crate::json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }

    /// Whether this is the user moderation names `user`: its id, or (for a sender without
    /// one, auth off) the name it chose.
    pub fn is(&self, user: &str) -> bool {
        match &self.id {
            Some(id) => id == user,
            None => self.name.as_deref() == Some(user),
        }
    }

    /// Reads what `to_json` wrote; `None` for anything else.
    pub fn from_json(text: &str) -> Option<Arc<Self>> {
        serde_json::from_str(text).ok().map(Arc::new)
    }
}

/// What a client sends: `{"message": X}`; other keys are ignored, as the original service did.
#[derive(Debug, Deserialize)]
pub struct Publish {
    /// `None` when the key is missing; `{"message": null}` is a message like any other.
    #[serde(default, deserialize_with = "present")]
    pub message: Option<Box<RawValue>>,
    #[serde(default)]
    pub room: Option<String>,
    /// A fresh token for an open WebSocket connection (`{"token": NEW}`).
    #[serde(default, deserialize_with = "lenient")]
    pub token: Option<String>,
    /// `{"typing": true}`: the sender is typing (a WebSocket client with a name).
    #[serde(default, deserialize_with = "lenient")]
    pub typing: Option<bool>,
    /// HTTP with auth off: the name the sender chose.
    #[serde(default, deserialize_with = "lenient")]
    pub name: Option<String>,
    /// HTTP with the API key: the user a backend publishes for. Ignored from anyone else.
    #[serde(default, deserialize_with = "lenient")]
    pub user: Option<Author>,
    /// The idempotency key, as sent; `Publish::parse` checks it into `nonce` (a wrong one is
    /// refused, not ignored: the sender relies on it).
    #[serde(default, rename = "nonce")]
    sent_nonce: Option<serde_json::Value>,
    #[serde(skip)]
    pub nonce: Option<Nonce>,
    /// `{"message": X, "reply_to": ID}`: the message it answers; checked into `reply_to`.
    #[serde(default, rename = "reply_to")]
    sent_reply_to: Option<serde_json::Value>,
    #[serde(skip)]
    pub reply_to: Option<u64>,
    /// `{"edit": ID, "message": X}`, `{"delete": ID}`, `{"react": ID, "emoji": E}`,
    /// `{"unreact": ID, "emoji": E}`, `{"read": ID}`: checked into `action`.
    #[serde(default)]
    edit: Option<serde_json::Value>,
    #[serde(default)]
    delete: Option<serde_json::Value>,
    #[serde(default)]
    react: Option<serde_json::Value>,
    #[serde(default)]
    unreact: Option<serde_json::Value>,
    #[serde(default)]
    emoji: Option<serde_json::Value>,
    #[serde(default)]
    read: Option<serde_json::Value>,
    #[serde(skip)]
    pub action: Option<Action>,
}

/// What a frame asks for besides publishing: a change to a stored message, or a read position.
#[derive(Debug)]
pub enum Action {
    Edit { id: u64, message: Box<RawValue> },
    Delete { id: u64 },
    React { id: u64, emoji: Emoji, on: bool },
    Read { id: u64 },
}

impl Action {
    /// What an error about it answers.
    pub fn request(&self) -> Request {
        match self {
            Action::Edit { .. } => Request::Edit,
            Action::Delete { .. } => Request::Delete,
            Action::React { .. } => Request::React,
            Action::Read { .. } => Request::Read,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BadPublish {
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    #[error("expected a JSON object such as {{\"message\": \"hello\"}}")]
    NotAnObject,
    #[error("missing \"message\" key")]
    MissingMessage,
    #[error(
        "invalid \"nonce\": expected a string of 1 to 64 characters, without control characters"
    )]
    InvalidNonce,
    #[error("invalid \"{0}\": expected a message id (a whole number, 1 or more)")]
    InvalidId(&'static str),
    #[error("invalid \"emoji\": {0}")]
    InvalidEmoji(String),
    #[error("\"edit\" needs the new \"message\"")]
    EditWithoutMessage,
}

impl BadPublish {
    /// What a frame refused for this asked for.
    pub fn request(&self) -> Request {
        match self {
            BadPublish::InvalidJson(_) | BadPublish::NotAnObject => Request::Frame,
            BadPublish::MissingMessage | BadPublish::InvalidNonce => Request::Message,
            BadPublish::InvalidId("reply_to") => Request::Message,
            BadPublish::InvalidId("edit") | BadPublish::EditWithoutMessage => Request::Edit,
            BadPublish::InvalidId("delete") => Request::Delete,
            BadPublish::InvalidId("read") => Request::Read,
            BadPublish::InvalidId(_) | BadPublish::InvalidEmoji(_) => Request::React,
        }
    }
}

/// A message id a client named: a whole number, 1 or more.
fn message_id(value: serde_json::Value, key: &'static str) -> Result<u64, BadPublish> {
    value
        .as_u64()
        .filter(|id| *id > 0)
        .ok_or(BadPublish::InvalidId(key))
}

impl Publish {
    /// Parses a client frame or request body, telling apart the ways it can be wrong.
    pub fn parse(text: &[u8]) -> Result<Self, BadPublish> {
        if text.trim_ascii_start().first() != Some(&b'{') {
            // Serde would read `[X]` as the struct's fields in order: refuse every non-object here.
            return Err(
                match serde_json::from_slice::<serde::de::IgnoredAny>(text) {
                    Ok(_) => BadPublish::NotAnObject,
                    Err(error) => BadPublish::InvalidJson(error.to_string()),
                },
            );
        }
        let mut publish = serde_json::from_slice::<Publish>(text)
            .map_err(|error| BadPublish::InvalidJson(error.to_string()))?;
        publish.action = publish.take_action()?;
        if publish.message.is_none()
            && publish.token.is_none()
            && publish.typing.is_none()
            && publish.action.is_none()
        {
            return Err(BadPublish::MissingMessage);
        }
        publish.nonce = match publish.sent_nonce.take() {
            None => None,
            Some(serde_json::Value::String(text)) => Some(Nonce::parse(&text)?),
            Some(_) => return Err(BadPublish::InvalidNonce),
        };
        publish.reply_to = publish
            .sent_reply_to
            .take()
            .map(|id| message_id(id, "reply_to"))
            .transpose()?;
        Ok(publish)
    }

    /// The change or read position the frame asks for, checked (the first of `edit`, `delete`,
    /// `react`, `unreact`, `read` it has).
    fn take_action(&mut self) -> Result<Option<Action>, BadPublish> {
        let emoji = |emoji: Option<serde_json::Value>| match emoji {
            Some(serde_json::Value::String(emoji)) => {
                Emoji::parse(&emoji).map_err(BadPublish::InvalidEmoji)
            }
            _ => Err(BadPublish::InvalidEmoji("expected a string".into())),
        };
        if let Some(id) = self.edit.take() {
            let id = message_id(id, "edit")?;
            let message = self.message.take().ok_or(BadPublish::EditWithoutMessage)?;
            return Ok(Some(Action::Edit { id, message }));
        }
        // A publish stays a publish: the other keys of a frame with a message are ignored, as
        // the original service ignored every key but `message`.
        if self.message.is_some() {
            return Ok(None);
        }
        if let Some(id) = self.delete.take() {
            return Ok(Some(Action::Delete {
                id: message_id(id, "delete")?,
            }));
        }
        for (id, on, key) in [
            (self.react.take(), true, "react"),
            (self.unreact.take(), false, "unreact"),
        ] {
            if let Some(id) = id {
                let id = message_id(id, key)?;
                let emoji = emoji(self.emoji.take())?;
                return Ok(Some(Action::React { id, emoji, on }));
            }
        }
        if let Some(id) = self.read.take() {
            return Ok(Some(Action::Read {
                id: message_id(id, "read")?,
            }));
        }
        Ok(None)
    }
}

fn present<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(deserializer).map(Some)
}

/// An optional key that is `None` when it has the wrong shape: a WebSocket client's extra keys
/// are ignored, whatever they hold, as the original service ignored them.
fn lenient<'de, D: serde::Deserializer<'de>, T: serde::de::DeserializeOwned>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    let value = serde_json::Value::deserialize(deserializer)?;
    Ok(serde_json::from_value(value).ok())
}

/// The two shapes a stored message is sent in; each is encoded once and shared by every
/// recipient.
pub struct Frames {
    /// The original service's shape: `{"message":X}`.
    pub plain: OutgoingFrame,
    /// With metadata, for clients that asked for it: `{"id":N,"room":R,"message":X,"ts":T}`.
    pub meta: Option<OutgoingFrame>,
}

impl Frames {
    pub fn encode(message: &StoredMessage, with_meta: bool) -> Self {
        let raw = message.message.get().as_bytes();
        let plain = OutgoingFrame::raw_json_parts(&[b"{\"message\":", raw, b"}"]);
        let meta = with_meta.then(|| OutgoingFrame::json(message));
        Self { plain, meta }
    }
}

/// What a client resuming from an id is told besides messages (never stored, never sent to
/// other clients): `{"event": "gap" | "reset" | "caught_up", "room": R, ...}`.
#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event<'a> {
    /// Ids `from..=to` are not in history any more (or past the replay's bound).
    Gap {
        room: &'a RoomName,
        from: u64,
        to: u64,
    },
    /// The room's numbering is not the one the client knew: messages after `last` follow.
    Reset {
        room: &'a RoomName,
        last: u64,
        epoch: &'a str,
    },
    /// The replay is done: the client is current through `id`.
    CaughtUp {
        room: &'a RoomName,
        id: u64,
        epoch: &'a str,
    },
}

impl Event<'_> {
    pub fn frame(&self) -> OutgoingFrame {
        OutgoingFrame::json(self)
    }
}

/// The body of an error frame or HTTP error: `{"error":"..."}`.
pub fn error_body(reason: &str) -> Bytes {
    Bytes::from(serde_json::json!({ "error": reason }).to_string())
}

/// What a refused client frame asked for: `"for"` in its error frame, so that a client can tell
/// which of its requests an error answers (with the `nonce` of a refused publish).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// A publish (`{"message": X}`).
    Message,
    /// `{"typing": true}`.
    Typing,
    /// A token refresh (`{"token": NEW}`).
    Token,
    /// A frame that asks for nothing it could be read as (not JSON, not an object, binary).
    Frame,
    /// `{"edit": ID, "message": X}`.
    Edit,
    /// `{"delete": ID}`.
    Delete,
    /// `{"react": ID, "emoji": E}` or `{"unreact": ...}`.
    React,
    /// `{"read": ID}`.
    Read,
}

/// An error frame for one WebSocket client:
/// `{"error": "...", "for": "message", "nonce"?: N, "retry_after_ms"?: ms}`.
#[derive(Debug, Serialize)]
pub struct ErrorReply<'a> {
    pub error: &'a str,
    #[serde(rename = "for")]
    pub request: Request,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<&'a Nonce>,
    /// The message an edit, deletion or reaction was about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// A rate limit: when to try again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// Banned or muted: why, and until when (ms since the Unix epoch; absent: until lifted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<u64>,
}

impl<'a> ErrorReply<'a> {
    pub fn new(error: &'a str, request: Request) -> Self {
        Self {
            error,
            request,
            nonce: None,
            id: None,
            retry_after_ms: None,
            reason: None,
            until: None,
        }
    }

    /// `{"error": "muted" | "banned", "reason", "until"?}`.
    pub fn barred(barred: &'a crate::moderation::Barred, request: Request) -> Self {
        Self {
            reason: Some(barred.reason()),
            until: barred.until(),
            ..Self::new(barred.word(), request)
        }
    }

    /// The message the refused request was about.
    pub fn id(self, id: u64) -> Self {
        Self {
            id: Some(id),
            ..self
        }
    }

    /// `{"error": "rate limited", "retry_after_ms": N}`.
    pub fn rate_limited(request: Request, retry_after_ms: u64) -> Self {
        Self {
            retry_after_ms: Some(retry_after_ms),
            ..Self::new("rate limited", request)
        }
    }

    /// The refused publish's nonce, if it had one.
    pub fn nonce(self, nonce: Option<&'a Nonce>) -> Self {
        Self { nonce, ..self }
    }

    pub fn frame(&self) -> OutgoingFrame {
        OutgoingFrame::json(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    #[test]
    fn parses_any_json_message_and_ignores_other_keys() {
        let publish = Publish::parse(br#"{"message": {"a": [1, 2]}, "x": 1}"#).unwrap();
        assert_eq!(publish.message.unwrap().get(), r#"{"a": [1, 2]}"#);
        let publish = Publish::parse(br#"{"message": null}"#).unwrap();
        assert_eq!(publish.message.unwrap().get(), "null");
    }

    #[test]
    fn tells_bad_input_apart() {
        assert!(matches!(
            Publish::parse(b"{oops"),
            Err(BadPublish::InvalidJson(_))
        ));
        assert_eq!(Publish::parse(b"[1]").unwrap_err(), BadPublish::NotAnObject);
        assert_eq!(
            Publish::parse(b"\"hi\"").unwrap_err(),
            BadPublish::NotAnObject
        );
        assert_eq!(
            Publish::parse(b"{}").unwrap_err(),
            BadPublish::MissingMessage
        );
        assert!(matches!(
            Publish::parse(br#"{"message": 1, "room": 5}"#),
            Err(BadPublish::InvalidJson(_))
        ));
        let forged = Publish::parse(br#"{"message": 1, "user": "root", "name": 7}"#).unwrap();
        assert!(forged.user.is_none() && forged.name.is_none());
        let too_long = format!("\"{}\"", "x".repeat(65));
        for bad in ["\"\"", "5", "\"a\\nb\"", too_long.as_str()] {
            let text = format!("{{\"message\": 1, \"nonce\": {bad}}}");
            assert_eq!(
                Publish::parse(text.as_bytes()).unwrap_err(),
                BadPublish::InvalidNonce,
                "{text}"
            );
        }
        let with_nonce = Publish::parse(br#"{"message": 1, "nonce": "n-1"}"#).unwrap();
        assert_eq!(with_nonce.nonce.unwrap().as_str(), "n-1");
    }

    #[test]
    fn frames() {
        let message = StoredMessage {
            id: 7,
            room: RoomName::parse("r").unwrap(),
            message: raw(r#""hé""#),
            ts: 1000,
            user: None,
            nonce: None,
            extra: None,
        };
        let frames = Frames::encode(&message, true);
        let plain = frames.plain.into_bytes();
        // A text frame of 17 bytes, then the JSON.
        assert_eq!(&plain[..2], [0x81, 17]);
        assert_eq!(&plain[2..], r#"{"message":"hé"}"#.as_bytes());
        let meta = frames.meta.unwrap().into_bytes();
        assert_eq!(
            &meta[2..],
            r#"{"id":7,"room":"r","message":"hé","ts":1000}"#.as_bytes()
        );
        assert!(Frames::encode(&message, false).meta.is_none());
    }
}
