//! Room names: what the original service accepted (ASCII letters, digits, `_`, up to 94 characters), plus `-`.

use std::fmt;
use std::sync::Arc;

use serde::{Serialize, Serializer};

/// Longest room name the original service accepted (Django Channels group names are at most 100 bytes,
/// and it prefixed `chat_`).
pub const MAX_ROOM_LEN: usize = 94;

/// A validated room name; cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomName(Arc<str>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidRoom {
    #[error("room name is empty")]
    Empty,
    #[error("room name is longer than {MAX_ROOM_LEN} characters")]
    TooLong,
    #[error("room name may only hold ASCII letters, digits, '_' and '-'")]
    BadCharacter,
}

impl RoomName {
    pub fn parse(name: &str) -> Result<Self, InvalidRoom> {
        if name.is_empty() {
            return Err(InvalidRoom::Empty);
        }
        if name.len() > MAX_ROOM_LEN {
            return Err(InvalidRoom::TooLong);
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(InvalidRoom::BadCharacter);
        }
        Ok(Self(Arc::from(name)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Serialize for RoomName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_the_original_service_accepted() {
        for name in [
            "testroom",
            "Room_42",
            "a",
            &"x".repeat(MAX_ROOM_LEN),
            "team-chat",
        ] {
            assert!(RoomName::parse(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn rejects_the_rest() {
        assert_eq!(RoomName::parse(""), Err(InvalidRoom::Empty));
        assert_eq!(RoomName::parse(&"x".repeat(95)), Err(InvalidRoom::TooLong));
        for name in ["a b", "é", "a/b", "a.b", "{x}", "a%20"] {
            assert_eq!(
                RoomName::parse(name),
                Err(InvalidRoom::BadCharacter),
                "{name}"
            );
        }
    }
}
