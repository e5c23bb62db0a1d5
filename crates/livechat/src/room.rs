//! Room names: what the original service accepted (ASCII letters, digits, `_`, up to 94 characters), plus `-`;
//! and direct-message rooms between two users, `dm:A:B` (their ids, in order).

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

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
    #[error(
        "a direct-message room is dm:A:B, A and B two different user ids in order, each 1 to 40 \
         ASCII letters, digits or '_', '-', '.', '@', '+'"
    )]
    BadDirect,
}

/// Direct-message rooms are named `dm:` and the two users' ids, in order, joined by `:`.
pub const DIRECT_PREFIX: &str = "dm:";
/// Longest user id a direct-message room can name.
pub const MAX_DIRECT_ID: usize = 40;

fn direct_id(id: &str) -> bool {
    (1..=MAX_DIRECT_ID).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.@+".contains(&b))
}

impl RoomName {
    pub fn parse(name: &str) -> Result<Self, InvalidRoom> {
        if let Some(pair) = name.strip_prefix(DIRECT_PREFIX) {
            let (a, b) = pair.split_once(':').ok_or(InvalidRoom::BadDirect)?;
            if !direct_id(a) || !direct_id(b) || a >= b {
                return Err(InvalidRoom::BadDirect);
            }
            return Ok(Self(Arc::from(name)));
        }
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

    /// The direct-message room of two users, by their ids.
    pub fn direct(a: &str, b: &str) -> Result<Self, InvalidRoom> {
        let (first, second) = if a <= b { (a, b) } else { (b, a) };
        Self::parse(&format!("{DIRECT_PREFIX}{first}:{second}"))
    }

    /// A direct-message room's two users' ids.
    pub fn direct_users(&self) -> Option<(&str, &str)> {
        self.0.strip_prefix(DIRECT_PREFIX)?.split_once(':')
    }
}

impl<'de> Deserialize<'de> for RoomName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        RoomName::parse(&name).map_err(serde::de::Error::custom)
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
    fn direct_message_rooms_name_two_users_in_order() {
        let room = RoomName::direct("42", "7").unwrap();
        assert_eq!(room.as_str(), "dm:42:7");
        assert_eq!(room.direct_users(), Some(("42", "7")));
        assert_eq!(
            RoomName::direct("a@b.example", "bob").unwrap().as_str(),
            "dm:a@b.example:bob"
        );
        for bad in ["dm:7:42", "dm:a:a", "dm:a", "dm::b", "dm:a:b:c", "dm:a b:c"] {
            assert_eq!(RoomName::parse(bad), Err(InvalidRoom::BadDirect), "{bad}");
        }
        assert!(RoomName::direct("x", &"y".repeat(41)).is_err());
        assert!(RoomName::parse("lobby").unwrap().direct_users().is_none());
    }

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
