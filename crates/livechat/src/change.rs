//! Changes to stored messages: edits, deletions and reactions. Who may make one is checked by the
//! store, atomically with making it (it knows each message's author): authors edit and delete
//! their own messages (within `LIVECHAT_EDIT_WINDOW`), moderators any; anyone with a name reacts.
//!
//! Each change moves the room's change counter. A stored message keeps the counter's value at the
//! time it was stored and at its last change, so that a client resuming after id N gets, besides
//! the messages after N, the current state of every message up to N changed since N was stored,
//! in the order of their changes (a deleted message's old text is never sent again).

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::value::RawValue;

use crate::message::{Author, Reactions, StoredMessage};
use crate::outgoing::OutgoingFrame;
use crate::presence::same_user;
use crate::room::RoomName;

/// Most bytes of an emoji (any short string: a reaction's name).
pub const MAX_EMOJI_BYTES: usize = 16;
/// Most distinct emoji on one message.
pub const MAX_EMOJI_PER_MESSAGE: usize = 20;

/// A change asked for.
#[derive(Debug)]
pub struct Change {
    pub room: RoomName,
    pub id: u64,
    /// Who asks.
    pub by: Arc<Author>,
    /// A moderator may change any message, at any time.
    pub moderator: bool,
    pub kind: ChangeKind,
}

impl Change {
    /// What an error about it answers.
    pub fn request(&self) -> crate::message::Request {
        use crate::message::Request;
        match self.kind {
            ChangeKind::Edit(_) => Request::Edit,
            ChangeKind::Delete => Request::Delete,
            ChangeKind::React { .. } => Request::React,
        }
    }
}

#[derive(Debug)]
pub enum ChangeKind {
    /// The message's new text.
    Edit(Box<RawValue>),
    Delete,
    /// A reaction added (`on`) or taken back.
    React {
        emoji: Emoji,
        on: bool,
    },
}

/// A reaction's name: 1 to `MAX_EMOJI_BYTES` bytes, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Emoji(Arc<str>);

impl Emoji {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() || text.len() > MAX_EMOJI_BYTES || text.chars().any(char::is_control) {
            return Err(format!(
                "an emoji is 1 to {MAX_EMOJI_BYTES} bytes without control characters"
            ));
        }
        Ok(Self(Arc::from(text)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A change made: what members are told.
#[derive(Debug, Clone)]
pub enum Changed {
    Edited {
        room: RoomName,
        id: u64,
        message: Box<RawValue>,
        edited_ts: u64,
        by: Arc<Author>,
    },
    Deleted {
        room: RoomName,
        id: u64,
        by: Arc<Author>,
    },
    Reacted {
        room: RoomName,
        id: u64,
        emoji: Emoji,
        user: Arc<Author>,
        /// The emoji's reactions on the message now.
        count: u64,
        on: bool,
    },
}

/// Why a change was not made (nothing changed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeRefused {
    #[error("no message {id} in this room")]
    NotFound { id: u64 },
    #[error("message {id} is no longer stored")]
    Gone { id: u64 },
    #[error("message {id} is deleted")]
    Deleted { id: u64 },
    #[error("not allowed: only its author or a moderator may change message {id}")]
    NotAllowed { id: u64 },
    #[error("too late: a message can be changed for {window_s} s after it is sent")]
    TooLate { window_s: u64 },
    #[error("message {id} has {MAX_EMOJI_PER_MESSAGE} kinds of reaction already")]
    TooManyEmoji { id: u64 },
}

/// Whether `change` may be made to a message by `author` stored at `ts` (ms): reactions by
/// anyone, edits and deletions by its author (within `edit_window`) or a moderator; nothing to
/// a deleted message.
pub fn may_change(
    change: &Change,
    author: Option<&Author>,
    deleted: bool,
    ts: u64,
    now: u64,
    edit_window: Option<Duration>,
) -> Result<(), ChangeRefused> {
    let id = change.id;
    if deleted {
        return Err(ChangeRefused::Deleted { id });
    }
    if matches!(change.kind, ChangeKind::React { .. }) || change.moderator {
        return Ok(());
    }
    if !author.is_some_and(|author| same_user(author, &change.by)) {
        return Err(ChangeRefused::NotAllowed { id });
    }
    match edit_window {
        Some(window) if now.saturating_sub(ts) > window.as_millis() as u64 => {
            Err(ChangeRefused::TooLate {
                window_s: window.as_secs(),
            })
        }
        _ => Ok(()),
    }
}

impl Changed {
    pub fn room(&self) -> &RoomName {
        match self {
            Changed::Edited { room, .. }
            | Changed::Deleted { room, .. }
            | Changed::Reacted { room, .. } => room,
        }
    }

    /// The event members with `meta=1` receive.
    pub fn frame(&self) -> OutgoingFrame {
        OutgoingFrame::json(&self.event())
    }

    /// The same event, as JSON.
    pub fn event(&self) -> serde_json::Value {
        match self {
            Changed::Edited {
                room,
                id,
                message,
                edited_ts,
                by,
            } => serde_json::json!({
                "event": "edited", "room": room, "id": id, "message": message,
                "edited_ts": edited_ts, "by": by,
            }),
            Changed::Deleted { room, id, by } => {
                serde_json::json!({ "event": "deleted", "room": room, "id": id, "by": by })
            }
            Changed::Reacted {
                room,
                id,
                emoji,
                user,
                count,
                on,
            } => serde_json::json!({
                "event": "reaction", "room": room, "id": id, "emoji": emoji, "user": user,
                "count": count, "on": on,
            }),
        }
    }
}

/// What a resuming client is sent of a message changed while it was away: its state now.
pub fn replayed_change(message: &StoredMessage) -> OutgoingFrame {
    let extra = message.extra.as_deref();
    let body = if message.is_deleted() {
        serde_json::json!({ "event": "deleted", "room": message.room, "id": message.id })
    } else if let Some(edited_ts) = extra.and_then(|extra| extra.edited_ts) {
        let mut body = serde_json::json!({
            "event": "edited", "room": message.room, "id": message.id,
            "message": message.message, "edited_ts": edited_ts,
        });
        if let Some(reactions) = extra.and_then(|extra| extra.reactions.as_ref()) {
            body["reactions"] = serde_json::json!(reactions);
        }
        body
    } else {
        let empty = Reactions::new();
        let reactions = extra
            .and_then(|extra| extra.reactions.as_ref())
            .unwrap_or(&empty);
        serde_json::json!({
            "event": "reactions", "room": message.room, "id": message.id, "reactions": reactions,
        })
    };
    OutgoingFrame::json(&body)
}
