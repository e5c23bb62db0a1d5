//! Resuming from an id (`?since=ID&epoch=E`): what a reconnecting client missed, then the live
//! messages, with no gap and no duplicate between the two.
//!
//! The connection joins its room held (the hub keeps its live frames aside), then the newest
//! missed messages are read from history (at most `replay_max`, and the history page byte cap),
//! and `plan` decides what the client is told: a `reset` when its numbering is not the room's,
//! a `gap` for what it cannot be sent, for a client with metadata the current state of the
//! messages it had that were edited, deleted or reacted to since (in the order of those changes:
//! `crate::change`), the replayed messages (deleted ones as `deleted` events, or left out for the
//! original service's clients), the held live frames the replay did not already hold, and
//! `caught_up`.

use bytes::Bytes;

use super::{ApiError, AppState};
use crate::change::replayed_change;
use crate::hub::Subscription;
use crate::message::{Event, Frames, StoredMessage};
use crate::outgoing::OutgoingFrame;
use crate::room::RoomName;
use crate::store::{HistoryQuery, Page};

/// Where a client resumes: the last id it saw, and the epoch it counted in, if it knows it.
#[derive(Debug, Clone)]
pub struct ResumeFrom {
    pub since: u64,
    pub epoch: Option<String>,
}

impl ResumeFrom {
    /// From the connect URL's `since` and `epoch`.
    pub fn parse(since: Option<&str>, epoch: Option<&str>) -> Result<Option<Self>, ApiError> {
        let Some(since) = since else {
            return match epoch {
                Some(_) => Err(ApiError::BadParameter {
                    name: "epoch",
                    reason: "only with since".into(),
                }),
                None => Ok(None),
            };
        };
        let since = since.parse().map_err(|_| ApiError::BadParameter {
            name: "since",
            reason: format!("expected a message id (0 or more), not {since:?}"),
        })?;
        if epoch.is_some_and(|epoch| epoch.is_empty() || epoch.len() > 64) {
            return Err(ApiError::BadParameter {
                name: "epoch",
                reason: "expected 1 to 64 characters".into(),
            });
        }
        Ok(Some(Self {
            since,
            epoch: epoch.map(str::to_owned),
        }))
    }
}

/// The frames a resuming client is sent first, in order, ending with `caught_up`; after them
/// come the live frames its queue takes from now on.
pub async fn catch_up(
    state: &AppState,
    room: &RoomName,
    subscription: &Subscription,
    from: &ResumeFrom,
    meta: bool,
    reader: Option<String>,
) -> Result<Vec<Bytes>, ApiError> {
    let query = HistoryQuery {
        room: room.clone(),
        limit: state.replay_max,
        before: None,
        after: Some(from.since),
        max_bytes: state.history_page_bytes,
        newest_first: true,
        reader: reader.clone(),
    };
    let page = state.engine.history(query).await?;
    let plan = plan(from, &page);
    let mut frames = Vec::with_capacity(plan.replay.len() + 3);
    frames.extend(
        plan.lead
            .iter()
            .map(|event| event.to_frame(room, &page.epoch).into_bytes()),
    );
    let reset = plan
        .lead
        .iter()
        .any(|lead| matches!(lead, Lead::Reset { .. }));
    if meta && !reset && from.since > 0 {
        let changed = state
            .engine
            .changed_since(room, from.since, reader, state.replay_max)
            .await?;
        frames.extend(
            changed
                .iter()
                .map(|message| replayed_change(message).into_bytes()),
        );
    }
    for message in plan.replay {
        match (message.is_deleted(), meta) {
            (true, true) => frames.push(replayed_change(message).into_bytes()),
            (true, false) => {}
            (false, _) => {
                let encoded = Frames::encode(message, meta);
                frames.push(encoded.meta.unwrap_or(encoded.plain).into_bytes());
            }
        }
    }
    let released = subscription.release(plan.through);
    frames.extend(released.frames);
    let current = released.last_id.unwrap_or(plan.through);
    let caught_up = Event::CaughtUp {
        room,
        id: current,
        epoch: &page.epoch,
    };
    frames.push(caught_up.frame().into_bytes());
    Ok(frames)
}

/// What to tell a resuming client before live messages.
struct Plan<'a> {
    lead: Vec<Lead>,
    replay: &'a [StoredMessage],
    /// The client has everything up to this id (or was told it cannot).
    through: u64,
}

#[derive(Debug, PartialEq, Eq)]
enum Lead {
    Gap { from: u64, to: u64 },
    Reset { last: u64 },
}

impl Lead {
    fn to_frame(&self, room: &RoomName, epoch: &str) -> OutgoingFrame {
        match *self {
            Lead::Gap { from, to } => Event::Gap { room, from, to }.frame(),
            Lead::Reset { last } => Event::Reset { room, last, epoch }.frame(),
        }
    }
}

/// `page`: the newest messages after `from.since`, with the room's last id and epoch.
fn plan<'a>(from: &ResumeFrom, page: &'a Page) -> Plan<'a> {
    // A client of the epoch this one went on from has ids of this numbering up to where it
    // went on; past that point its ids may be of messages this history never had.
    let continued = page.continues.as_ref().is_some_and(|(old, through)| {
        from.epoch.as_deref() == Some(&**old) && from.since <= *through
    });
    let other_epoch = from
        .epoch
        .as_deref()
        .is_some_and(|epoch| epoch != &*page.epoch)
        && !continued;
    if other_epoch || from.since > page.last_id {
        return Plan {
            lead: vec![Lead::Reset { last: page.last_id }],
            replay: &[],
            through: page.last_id,
        };
    }
    let newest = page
        .messages
        .last()
        .map_or(page.last_id, |message| message.id);
    let first_kept = page
        .messages
        .first()
        .map_or(newest + 1, |message| message.id);
    let lead = if first_kept > from.since + 1 {
        vec![Lead::Gap {
            from: from.since + 1,
            to: first_kept - 1,
        }]
    } else {
        Vec::new()
    };
    Plan {
        lead,
        replay: &page.messages,
        through: newest.max(from.since),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    fn page(ids: &[u64], last_id: u64) -> Page {
        let room = RoomName::parse("r").unwrap();
        Page {
            messages: ids
                .iter()
                .map(|&id| StoredMessage {
                    id,
                    room: room.clone(),
                    message: RawValue::from_string("1".into()).unwrap(),
                    ts: 0,
                    user: None,
                    nonce: None,
                    extra: None,
                })
                .collect(),
            more: false,
            last_id,
            epoch: "e1".into(),
            continues: None,
        }
    }

    fn from(since: u64, epoch: Option<&str>) -> ResumeFrom {
        ResumeFrom {
            since,
            epoch: epoch.map(str::to_owned),
        }
    }

    #[test]
    fn replays_what_was_missed() {
        assert_eq!(
            plan_of(&from(3, Some("e1")), &page(&[4, 5, 6], 6)),
            (vec![], 3, 6)
        );
        assert_eq!(plan_of(&from(6, None), &page(&[], 6)), (vec![], 0, 6));
    }

    fn plan_of(from: &ResumeFrom, page: &Page) -> (Vec<Lead>, usize, u64) {
        let plan = plan(from, page);
        (plan.lead, plan.replay.len(), plan.through)
    }

    #[test]
    fn says_what_is_no_longer_there() {
        // Retention (or the replay's bound) left 8..10 of 4..10.
        assert_eq!(
            plan_of(&from(3, None), &page(&[8, 9, 10], 10)),
            (vec![Lead::Gap { from: 4, to: 7 }], 3, 10)
        );
        // Everything after 3 is gone.
        assert_eq!(
            plan_of(&from(3, None), &page(&[], 10)),
            (vec![Lead::Gap { from: 4, to: 10 }], 0, 10)
        );
    }

    #[test]
    fn resets_a_client_ahead_of_the_room_or_in_another_epoch() {
        assert_eq!(
            plan_of(&from(12, None), &page(&[], 5)),
            (vec![Lead::Reset { last: 5 }], 0, 5)
        );
        assert_eq!(
            plan_of(&from(2, Some("old")), &page(&[3, 4, 5], 5)),
            (vec![Lead::Reset { last: 5 }], 0, 5)
        );
    }

    #[test]
    fn a_restored_history_goes_on_for_clients_within_the_backup() {
        // Restored from a backup of epoch "old" that ended at 4; 5 was stored after the restore.
        let restored = Page {
            continues: Some(("old".into(), 4)),
            ..page(&[3, 4, 5], 5)
        };
        assert_eq!(
            plan_of(&from(2, Some("old")), &restored),
            (vec![], 3, 5),
            "its ids up to 4 are the backup's"
        );
        assert_eq!(
            plan_of(&from(5, Some("old")), &restored),
            (vec![Lead::Reset { last: 5 }], 0, 5),
            "its 5 was lost with the node: not the restored history's 5"
        );
    }
}
