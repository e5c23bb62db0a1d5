//! Who is in a room: connections counted per node, named users listed once, with the number of
//! connections each has, and the events clients with `?presence=1` receive.
//!
//! - `roster`: every node's members of the rooms this node serves; local joins and leaves (told
//!   by the hub) and other nodes' changes (told by the engine) become per-user joins and leaves,
//!   coalesced until the next announcement; typing, throttled per user.
//! - The engine carries what crosses nodes: the embedded one has only this node; the Redis one
//!   relays this node's changes and typing on the room's channel and reads other nodes' state.
//!
//! A user is its token's `id`, or, with auth off, the name it chose; anonymous connections count
//! as members and are not listed.

mod roster;
mod typing;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use roster::{Applied, NodeChange, NodeView, Person, Roster};
pub use typing::{TypingGate, TypingVerdict};

use crate::hub::{Audience, Hub};
use crate::message::Author;
use crate::outgoing::OutgoingFrame;
use crate::room::RoomName;
use crate::webhooks::{Outbox, WebhookSettings};

/// Joins, leaves and count changes are announced at most this often per room.
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(1);
/// A user's typing reaches the others at most this often.
pub const TYPING_EVERY: Duration = Duration::from_secs(2);
/// Most users listed in a presence answer or event; beyond, `truncated` is set.
pub const MAX_LISTED: usize = 1000;

/// What tells users apart: `i:` and the token's id, or `n:` and a chosen name.
pub type UserKey = Arc<str>;

/// The key of a named user; `None` for an anonymous one.
pub fn user_key(user: &Author) -> Option<UserKey> {
    match (&user.id, &user.name) {
        (Some(id), _) => Some(Arc::from(format!("i:{id}"))),
        (None, Some(name)) => Some(Arc::from(format!("n:{name}"))),
        (None, None) => None,
    }
}

/// Whether two authors are the same user.
pub fn same_user(a: &Author, b: &Author) -> bool {
    match (&a.id, &b.id) {
        (Some(a), Some(b)) => a == b,
        (None, None) => a.name.is_some() && a.name == b.name,
        _ => false,
    }
}

/// A listed user: `{"id", "name", "connections"}` (no `id` for a chosen name).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct UserCount {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub connections: u32,
}

/// Who is in a room: `members` counts connections; `users` lists each named user once.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PresenceList {
    #[schema(value_type = String)]
    pub room: RoomName,
    pub members: u64,
    pub users: Vec<UserCount>,
    /// More than `MAX_LISTED` users: only the first are listed (by name).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

impl PresenceList {
    /// The sum of what each node holds.
    pub fn of<'a>(room: &RoomName, nodes: impl IntoIterator<Item = &'a NodeView>) -> Self {
        let mut members = 0;
        let mut users: std::collections::HashMap<&UserKey, (&Author, u32)> = Default::default();
        for node in nodes {
            members += node.members;
            for (key, person) in &node.people {
                users.entry(key).or_insert((&person.user, 0)).1 += person.connections;
            }
        }
        let mut users: Vec<UserCount> = users
            .into_values()
            .map(|(user, connections)| UserCount {
                id: user.id.clone(),
                name: user.name.clone(),
                connections,
            })
            .collect();
        users.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
        let truncated = users.len() > MAX_LISTED;
        users.truncate(MAX_LISTED);
        Self {
            room: room.clone(),
            members,
            users,
            truncated,
        }
    }

    /// `{"event":"presence","room":R,"members":N,"users":[...]}`: the first frame of a client
    /// with presence on.
    pub fn frame(&self) -> OutgoingFrame {
        #[derive(Serialize)]
        struct Snapshot<'a> {
            event: &'static str,
            #[serde(flatten)]
            list: &'a PresenceList,
        }
        let snapshot = Snapshot {
            event: "presence",
            list: self,
        };
        OutgoingFrame::json(&snapshot)
    }
}

/// `{"event":"presence","room":R,"members":N,"joined":[...],"left":[...]}`.
#[derive(Serialize)]
struct Diff<'a> {
    event: &'static str,
    room: &'a RoomName,
    members: u64,
    joined: Vec<&'a Author>,
    left: Vec<&'a Author>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    truncated: bool,
}

/// `{"event":"typing","room":R,"user":{...}}`.
pub fn typing_frame(room: &RoomName, user: &Author) -> OutgoingFrame {
    let body = serde_json::json!({ "event": "typing", "room": room, "user": user });
    OutgoingFrame::json(&body)
}

/// Tells the members of `room` with presence on that `user` is typing (not its own connections),
/// unless it was told less than `TYPING_EVERY` ago.
pub fn deliver_typing(roster: &Roster, hub: &Hub, room: &RoomName, user: &Author) {
    if let Some(frame) = roster.typing(room, user) {
        hub.announce(room, Audience::Presence { except: Some(user) }, frame);
    }
}

/// Announces each room's coalesced joins and leaves to its members with presence on, once per
/// `ANNOUNCE_EVERY`, and records for the app (`tell`: its outbox and the kinds it wants) who
/// came and went, until the runtime ends.
pub async fn run(
    roster: Arc<Roster>,
    hub: Arc<Hub>,
    tell: Option<(Arc<dyn Outbox>, WebhookSettings)>,
) {
    let mut ticks = tokio::time::interval(ANNOUNCE_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        // Before the announcements, which forget rooms this node no longer serves.
        if let Some((outbox, wanted)) = &tell {
            let events = roster.take_presence_events(crate::store::now_ms(), wanted);
            if !events.is_empty()
                && let Err(error) = outbox.record(events).await
            {
                tracing::warn!(%error, "cannot record who came and went for the app's webhook");
            }
        }
        for (room, frame) in roster.take_announcements() {
            hub.announce(&room, Audience::Presence { except: None }, frame);
        }
    }
}
