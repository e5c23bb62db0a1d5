//! Entering a room to follow it live: what a WebSocket handshake and an event stream
//! (`transport::sse`) share. The connect URL's switches, the checks in order (room name, who the
//! caller is, its token's rooms, bans, who may read history when resuming, the connection caps),
//! and, once the caller has joined the hub, the frames it is sent first (who is here, then what
//! it missed).

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query};
use bytes::Bytes;
use serde::Deserialize;

use super::admission::Permit;
use super::caller::{Caller, Identified};
use super::resume::{self, ResumeFrom};
use super::{ApiError, AppState};
use crate::auth::Guarded;
use crate::hooks::Transport;
use crate::hub::Subscription;
use crate::room::RoomName;

#[derive(Debug, Deserialize)]
pub struct ConnectOptions {
    /// `?meta=1`: frames carry `id`, `room` and `ts` beside `message`, and changes to stored
    /// messages are told.
    meta: Option<String>,
    /// `?token=`: the caller's token (browsers cannot set headers on a WebSocket or an
    /// EventSource).
    token: Option<String>,
    /// `?name=`: with auth off, the name the client chose.
    name: Option<String>,
    /// `?since=ID`: resume after the last id the client saw (see `resume`).
    since: Option<String>,
    /// `?epoch=E`: the epoch that id counts in.
    epoch: Option<String>,
    /// `?presence=1`: presence and typing events (see `crate::presence`).
    presence: Option<String>,
    /// `?receipts=1`: read receipts (see `crate::receipts`).
    receipts: Option<String>,
}

/// The switches a connection asked for.
#[derive(Debug, Clone, Copy)]
pub struct Switches {
    pub meta: bool,
    pub presence: bool,
    pub receipts: bool,
}

fn switched_on(value: Option<&str>) -> bool {
    matches!(value, Some("1" | "true" | "yes"))
}

/// A caller let into a room.
pub struct Entry {
    pub room: RoomName,
    pub switches: Switches,
    pub identified: Identified,
    pub resume: Option<ResumeFrom>,
    /// Its place under the connection caps, given back when it ends.
    pub permit: Permit,
}

/// Checks a caller that asks to follow a room, in order; `last_seen` stands for `?since=` when
/// the URL has none (an event stream's `Last-Event-ID`).
pub async fn enter(
    state: &AppState,
    caller: Result<Caller, ApiError>,
    room: Result<Path<String>, PathRejection>,
    options: Result<Query<ConnectOptions>, QueryRejection>,
    last_seen: Option<&str>,
    transport: Transport,
) -> Result<Entry, ApiError> {
    let Path(room) = room?;
    let Query(options) = options?;
    let room = RoomName::parse(&room)?;
    let caller = caller?;
    let since = options.since.as_deref().or(last_seen);
    let resume = ResumeFrom::parse(since, options.epoch.as_deref())?;
    let identified = caller
        .identify(
            state,
            options.token.as_deref(),
            options.name.as_deref(),
            Some(&room),
            transport,
        )
        .await?;
    identified.identity.check_room(&room)?;
    state
        .moderation
        .may_enter(identified.identity.user.as_deref(), &room)?;
    if resume.is_some() {
        state
            .history_reads
            .check(&identified.identity, Guarded::History)?;
    }
    let permit = state.admission.admit(caller.client_ip())?;
    Ok(Entry {
        room,
        switches: Switches {
            meta: switched_on(options.meta.as_deref()),
            presence: switched_on(options.presence.as_deref()),
            receipts: switched_on(options.receipts.as_deref()),
        },
        identified,
        resume,
        permit,
    })
}

/// What a member that just joined is sent first, once its room is ready (other nodes' members
/// are known): who is here (with presence on), then what it missed (resuming). `meta`: message
/// frames with their ids and changes told; `reader`: whose reactions are `me`.
pub async fn first_frames(
    state: &AppState,
    subscription: &Subscription,
    switches: Switches,
    resume: Option<&ResumeFrom>,
    meta: bool,
    reader: Option<String>,
) -> Result<Vec<Bytes>, ApiError> {
    let room = subscription.room();
    state.engine.room_ready(room).await?;
    let mut first = Vec::new();
    if switches.presence {
        first.push(state.roster.list(room).frame().into_bytes());
    }
    if let Some(from) = resume {
        first.extend(resume::catch_up(state, room, subscription, from, meta, reader).await?);
    }
    Ok(first)
}
