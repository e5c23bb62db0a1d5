//! Commands for every node: something for a user's connections wherever they are (their read
//! position moved), a user disconnected, bans changed, read receipts. The embedded engine carries them out at
//! once; the Redis engine publishes them on one channel that every node subscribes to, and each
//! node carries them out on its own connections (see `Control::apply`).

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::hub::{Audience, Hub};
use crate::message::Author;
use crate::outgoing::OutgoingFrame;
use crate::room::RoomName;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case")]
pub enum Control {
    /// Send `event` (a JSON text frame) to every connection of `user` but the one that caused
    /// it (`except`: a member id on node `from`).
    TellUser {
        user: String,
        event: String,
        from: String,
        except: Option<u64>,
    },
    /// Close every connection of `user` (as moderation names users: its id, or with auth off
    /// the name it chose) in `rooms`, or everywhere, with `reason`: 4003, or 4004 with
    /// `for_good`.
    Kick {
        user: String,
        rooms: Option<Vec<RoomName>>,
        reason: String,
        for_good: bool,
    },
    /// The bans changed: read them again.
    BansChanged,
    /// Users read rooms up to these ids: told to the rooms' members with read receipts on.
    Seen { seen: Vec<Seen> },
}

/// A user read a room up to an id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub room: RoomName,
    pub user: Author,
    pub id: u64,
}

impl Seen {
    /// `{"event": "seen", "room", "user", "id"}`.
    pub fn frame(&self) -> OutgoingFrame {
        let event = serde_json::json!({
            "event": "seen",
            "room": self.room,
            "user": self.user,
            "id": self.id,
        });
        OutgoingFrame::json(&event)
    }
}

/// What a node does with moderation commands from any node, besides closing connections.
pub trait ModerationNews: Send + Sync {
    /// The bans changed: read them again.
    fn bans_changed(&self);
    /// A user was disconnected: forget what admitted them (a reconnect is judged afresh).
    fn user_disconnected(&self, user: &str);
}

impl Control {
    /// Carries the command out on this node (`node`: its name).
    pub fn apply(&self, hub: &Hub, node: &str, moderation: Option<&Arc<dyn ModerationNews>>) {
        match self {
            Control::TellUser {
                user,
                event,
                from,
                except,
            } => {
                let except = except.filter(|_| from == node);
                let event = OutgoingFrame::raw_json_parts(&[event.as_bytes()]);
                hub.tell_user(user, event, except);
            }
            Control::Kick {
                user,
                rooms,
                reason,
                for_good,
            } => {
                let reason = Arc::from(reason.as_str());
                for key in [format!("i:{user}"), format!("n:{user}")] {
                    hub.kick_user(&key, rooms.as_deref(), Arc::clone(&reason), *for_good);
                }
                if let Some(moderation) = moderation {
                    moderation.user_disconnected(user);
                }
            }
            Control::BansChanged => {
                if let Some(moderation) = moderation {
                    moderation.bans_changed();
                }
            }
            Control::Seen { seen } => {
                for seen in seen {
                    hub.announce(&seen.room, Audience::Receipts, seen.frame());
                }
            }
        }
    }

    /// The command as JSON, to publish for every node.
    pub fn to_json(&self) -> Result<Bytes, crate::json::Unencodable> {
        crate::json::to_vec(self).map(Bytes::from)
    }
}
