//! Epochs: a short random string naming one numbering of a room's ids. Ids only grow within an
//! epoch; when the numbering can start again (a new history file, Redis lost the room's keys), the
//! epoch changes, so that a client resuming from an id can tell a continued history from a new one.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

pub type Epoch = Arc<str>;

/// A fresh epoch: 12 hex digits, from the process' random hash keys and the clock.
pub fn new_epoch() -> Epoch {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    let random = RandomState::new().hash_one((nanos, std::process::id()));
    Arc::from(format!("{:012x}", random & 0xffff_ffff_ffff))
}

#[cfg(test)]
mod tests {
    #[test]
    fn epochs_are_short_and_differ() {
        let (a, b) = (super::new_epoch(), super::new_epoch());
        assert_eq!(a.len(), 12);
        assert_ne!(a, b);
    }
}
