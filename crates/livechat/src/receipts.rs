//! Read receipts: when a user's read position in a room moves, the room's members that asked
//! (`?receipts=1`) are told `{"event": "seen", "room", "user", "id"}`. Positions are gathered on
//! each node and sent once a second, the latest per user and room, to every node through the
//! engine's control channel (`crate::control::Control::Seen`): at most one receipt per user and
//! room per second from each node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::control::{Control, Seen};
use crate::engine::Engine;
use crate::message::Author;
use crate::presence::{UserKey, user_key};
use crate::room::RoomName;

/// How often gathered receipts are sent.
pub const SEND_EVERY: Duration = Duration::from_secs(1);
/// Most users and rooms gathered between two sends; past it, further ones wait for the next
/// position move (counted in `dropped` and logged).
pub const MAX_PENDING: usize = 100_000;
/// Receipts in one control command.
const PER_COMMAND: usize = 1_000;

pub struct Receipts {
    engine: Arc<dyn Engine>,
    pending: Mutex<Gathered>,
    dropped: metrics::Counter,
}

/// The latest position of each user and room since the last send.
#[derive(Default)]
struct Gathered(HashMap<(RoomName, UserKey), (Arc<Author>, u64)>);

impl Gathered {
    /// Whether it was kept (false: full).
    fn add(&mut self, room: &RoomName, user: Arc<Author>, id: u64) -> bool {
        let Some(key) = user_key(&user) else {
            return true;
        };
        let full = self.0.len() >= MAX_PENDING;
        match self.0.get_mut(&(room.clone(), key.clone())) {
            Some((_, kept)) => *kept = (*kept).max(id),
            None if full => return false,
            None => {
                self.0.insert((room.clone(), key), (user, id));
            }
        }
        true
    }

    fn take(&mut self) -> Vec<Seen> {
        std::mem::take(&mut self.0)
            .into_iter()
            .map(|((room, _), (user, id))| Seen {
                room,
                user: Author::clone(&user),
                id,
            })
            .collect()
    }
}

impl Receipts {
    pub fn new(engine: Arc<dyn Engine>, dropped: metrics::Counter) -> Arc<Self> {
        Arc::new(Self {
            engine,
            pending: Mutex::default(),
            dropped,
        })
    }

    /// `user` has read `room` up to `id`.
    pub fn seen(&self, room: &RoomName, user: Arc<Author>, id: u64) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if !pending.add(room, user, id) {
            self.dropped.increment(1);
        }
    }

    /// Sends what was gathered every `SEND_EVERY`, until the runtime ends.
    pub async fn run(self: Arc<Self>) {
        let mut ticks = tokio::time::interval(SEND_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.send().await;
        }
    }

    async fn send(&self) {
        let seen = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        for chunk in seen.chunks(PER_COMMAND) {
            let command = Control::Seen {
                seen: chunk.to_vec(),
            };
            if let Err(error) = self.engine.control(command).await {
                tracing::warn!(%error, receipts = chunk.len(), "cannot send read receipts");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_users_reads_within_a_send_make_one_receipt_with_the_furthest_id() {
        let mut gathered = Gathered::default();
        let room = RoomName::parse("lobby").unwrap();
        let bo = Arc::new(Author {
            id: None,
            name: Some("Bo".into()),
        });
        for id in [3, 7, 5] {
            assert!(gathered.add(&room, bo.clone(), id));
        }
        let anonymous = Arc::new(Author {
            id: None,
            name: None,
        });
        assert!(gathered.add(&room, anonymous, 9));
        let seen = gathered.take();
        assert_eq!(seen.len(), 1);
        assert_eq!((seen[0].id, seen[0].user.name.as_deref()), (7, Some("Bo")));
        assert!(gathered.take().is_empty());
    }
}
