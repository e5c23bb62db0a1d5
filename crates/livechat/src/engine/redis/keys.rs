//! Names of the Redis keys and channels. Every key of a room carries the hash tag `{room}`, so a
//! Redis Cluster keeps a room's stream, counter and sharded channel in one slot.

use std::sync::Arc;

use crate::room::RoomName;

#[derive(Clone)]
pub struct Keys {
    prefix: Arc<str>,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: Arc::from(prefix),
        }
    }

    /// The room's history: a stream whose entry ids are `N-0`, N being the message id.
    pub fn stream(&self, room: &RoomName) -> String {
        format!("{}:{{{room}}}:history", self.prefix)
    }

    /// The room's last message id (INCR).
    pub fn sequence(&self, room: &RoomName) -> String {
        format!("{}:{{{room}}}:seq", self.prefix)
    }

    /// The bytes of the room's stored messages (INCRBY/DECRBY), for retention by size.
    pub fn bytes(&self, room: &RoomName) -> String {
        format!("{}:{{{room}}}:bytes", self.prefix)
    }

    /// The room's epoch (see `crate::epoch`): made by the first publish or read after the room's
    /// keys were lost, so that it changes exactly when the numbering starts again.
    pub fn epoch(&self, room: &RoomName) -> String {
        format!("{}:{{{room}}}:epoch", self.prefix)
    }

    /// Which epoch the room's epoch replaced, and the last id it kept: `EPOCH:ID` (set when
    /// Redis came back without messages it had acknowledged).
    pub fn renewed(&self, room: &RoomName) -> String {
        format!("{}:{{{room}}}:renewed", self.prefix)
    }

    /// A nonce published to the room, holding `id:ts` of its message for the dedupe window.
    pub fn nonce(&self, room: &RoomName, nonce: &str) -> String {
        format!("{}:{{{room}}}:nonce:{nonce}", self.prefix)
    }

    /// Messages changed after they were stored, a hash of fields `ID:F`: an edited one's whole
    /// record (`m` its text, `t` its time, `u` its author, `n` its nonce, `r` what it answers,
    /// `e` when it was edited), a deleted one's `d` and `t`, and for every changed one `s`, the
    /// room's change counter at its last change. An edited or deleted message's stream entry is
    /// deleted: its old text is gone.
    pub fn changes(&self, room: &RoomName) -> String {
        format!("{}:{{{room}}}:changes", self.prefix)
    }

    /// Changed messages by the room's last id at their last change (resumes read it).
    pub fn changed(&self, room: &RoomName) -> String {
        format!("{}:{{{room}}}:changed", self.prefix)
    }

    /// Ids of messages whose record moved from the stream to `changes` (edited or deleted):
    /// history pages read them beside the stream.
    pub fn moved(&self, room: &RoomName) -> String {
        format!("{}:{{{room}}}:moved", self.prefix)
    }

    /// The room's change counter (INCR).
    pub fn change_counter(&self, room: &RoomName) -> String {
        format!("{}:{{{room}}}:nchanges", self.prefix)
    }

    /// Who reacted: members `ID\tEMOJI\tUSER` scored by the message's id.
    pub fn reacted(&self, room: &RoomName) -> String {
        format!("{}:{{{room}}}:reacted", self.prefix)
    }

    /// One node's members of the room: `#seq`, `#members`, and each user's connections.
    pub fn presence(&self, room: &RoomName, node: &str) -> String {
        format!("{}:{{{room}}}:presence:{node}", self.prefix)
    }

    /// The room's pub/sub channel.
    pub fn channel(&self, room: &RoomName) -> String {
        format!("{}:{{{room}}}:messages", self.prefix)
    }

    pub fn room_of_channel(&self, channel: &str) -> Option<RoomName> {
        let room = channel
            .strip_prefix(&*self.prefix)?
            .strip_prefix(":{")?
            .strip_suffix("}:messages")?;
        RoomName::parse(room).ok()
    }

    /// Sorted set of rooms by the time (ms) of their latest message: those whose keys have not
    /// expired (at most 1,000,000), for the room list and age retention.
    pub fn recent(&self) -> String {
        format!("{}:recent", self.prefix)
    }

    /// The webhook outbox: a stream of events for the app (`webhooks`), read with a consumer
    /// group; its keys share the hash tag `{webhooks}`.
    pub fn outbox(&self) -> String {
        format!("{}:{{webhooks}}:outbox", self.prefix)
    }

    /// The bytes of the outbox's events, against `LIVECHAT_WEBHOOK_OUTBOX_BYTES`.
    pub fn outbox_bytes(&self) -> String {
        format!("{}:{{webhooks}}:bytes", self.prefix)
    }

    /// Which node sends the outbox's events (a lease).
    pub fn outbox_lease(&self) -> String {
        format!("{}:{{webhooks}}:sender", self.prefix)
    }

    /// The channel of commands for every node (`crate::control`), subscribed to for as long as
    /// a node runs.
    pub fn control(&self) -> String {
        format!("{}:{{control}}", self.prefix)
    }

    /// A user's read positions: room -> the last id it read.
    pub fn reads(&self, user: &str) -> String {
        format!("{}:reads:{user}", self.prefix)
    }

    /// Sorted set of a user's direct-message rooms, by when each was opened (ms).
    pub fn directs(&self, user: &str) -> String {
        format!("{}:directs:{user}", self.prefix)
    }

    /// Hash of bans and mutes: id -> the ban as JSON (`crate::moderation`).
    pub fn bans(&self) -> String {
        format!("{}:bans", self.prefix)
    }

    /// Sorted set of live nodes, scored by the time (ms) their registration expires.
    pub fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    /// Hash of one node's rooms and their local member counts, with a TTL.
    pub fn node_rooms(&self, node: &str) -> String {
        format!("{}:node:{node}:rooms", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_room_keys_share_one_hash_tag_and_channels_map_back() {
        let keys = Keys::new("lc");
        let room = RoomName::parse("lobby").unwrap();
        assert_eq!(keys.stream(&room), "lc:{lobby}:history");
        assert_eq!(keys.sequence(&room), "lc:{lobby}:seq");
        assert_eq!(keys.room_of_channel(&keys.channel(&room)), Some(room));
        assert_eq!(keys.room_of_channel("other:{lobby}:messages"), None);
    }
}
