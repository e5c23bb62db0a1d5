//! The server API, for the app's backend and moderators (the server key, or a token with the
//! `moderate` claim): disconnect a user everywhere, ban and mute (`crate::moderation`), one
//! message to many rooms, what is known of a room, and the removal of everything a user wrote.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::caller::{Caller, TokenParam};
use super::{ApiError, AppState};
use crate::auth::Identity;
use crate::change::{Change, ChangeKind, ChangeRefused};
use crate::epoch::Epoch;
use crate::hooks::Transport;
use crate::message::{Author, Draft, Nonce};
use crate::moderation::{Ban, BanOrder, Mode};
use crate::presence::UserCount;
use crate::room::RoomName;
use crate::store::Place;

/// Most rooms one broadcast writes to.
pub const MAX_BROADCAST_ROOMS: usize = 100;
/// Most stored messages one `DELETE /api/users/{user}/messages` looks at.
pub const MESSAGES_PER_PASS: usize = 5_000;

/// The caller, if it may moderate.
async fn moderator(
    state: &AppState,
    caller: &Caller,
    token: Option<&str>,
) -> Result<Identity, ApiError> {
    let identified = caller
        .identify(state, token, None, None, Transport::Http)
        .await?;
    match identified.identity.moderator {
        true => Ok(identified.identity),
        false => Err(ApiError::NotModerator),
    }
}

/// Who did it, as bans and events name them: the token's user, or `server` for the server key.
fn actor(identity: &Identity) -> String {
    identity
        .user
        .as_deref()
        .and_then(|user| user.id.clone().or_else(|| user.name.clone()))
        .unwrap_or_else(|| "server".to_owned())
}

fn json_body<T: serde::de::DeserializeOwned>(bytes: &[u8], shape: &str) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|error| ApiError::BadRequest(format!("expected {shape}: {error}")))
}

/// `POST /api/disconnect`'s body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisconnectBody {
    /// The user: its id (a token's `sub`), or with auth off the name it chose.
    user: String,
    /// Told to its connections in the close frame (at most 200 characters).
    #[serde(default)]
    reason: String,
    /// true (default): closed with 4003, clients may reconnect; false: 4004, they should not.
    #[serde(default = "yes")]
    reconnect: bool,
}

fn yes() -> bool {
    true
}

/// `POST /api/disconnect`: closes every connection of a user on every node within a second.
#[utoipa::path(
    post,
    path = "/api/disconnect", tag = "server",
    params(super::openapi::TokenQuery),
    request_body = DisconnectBody,
    responses(
        (status = 202, description = "Every node was told to close the user's connections", body = Object),
        (status = 400, description = "Not such a body", body = super::openapi::ErrorBody),
        (status = 401, description = "No valid token or key", body = super::openapi::ErrorBody),
        (status = 403, description = "Not a moderator", body = super::openapi::ErrorBody),
        (status = 503, description = "The nodes cannot be told (Redis unavailable)", body = super::openapi::ErrorBody),
    )
)]
pub async fn disconnect(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<TokenParam>, QueryRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let Query(params) = params?;
    moderator(&state, &caller, params.token.as_deref()).await?;
    let bytes = super::http::read_body(&state, body).await?;
    let order: DisconnectBody = json_body(&bytes, r#"{"user": ID, "reason"?, "reconnect"?}"#)?;
    state
        .moderation
        .disconnect(&order.user, &order.reason, order.reconnect)
        .await?;
    let answer = serde_json::json!({"user": order.user, "reconnect": order.reconnect});
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}

/// `POST /api/bans`' body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BanBody {
    /// The user: its id (a token's `sub`), or with auth off the name it chose.
    user: String,
    /// The room (absent: every room).
    #[schema(value_type = Option<String>)]
    room: Option<RoomName>,
    /// Seconds (absent: until lifted).
    #[schema(minimum = 1, maximum = 315_360_000)]
    duration: Option<u64>,
    /// At most 200 characters; told to the user.
    #[serde(default)]
    reason: String,
    /// `ban` (default): may not enter; `mute`: may read, not write.
    #[serde(default = "ban")]
    mode: Mode,
}

fn ban() -> Mode {
    Mode::Ban
}

/// `POST /api/bans`: bans (or mutes) a user in a room or everywhere, on every node; a ban
/// closes its connections there (4003 with the reason) and refuses new ones (403).
#[utoipa::path(
    post,
    path = "/api/bans", tag = "server",
    params(super::openapi::TokenQuery),
    request_body = BanBody,
    responses(
        (status = 201, description = "In force: the ban, with its id", body = Ban),
        (status = 400, description = "Not such a body", body = super::openapi::ErrorBody),
        (status = 401, description = "No valid token or key", body = super::openapi::ErrorBody),
        (status = 403, description = "Not a moderator", body = super::openapi::ErrorBody),
        (status = 409, description = "Too many bans in force", body = super::openapi::ErrorBody),
        (status = 503, description = "Cannot be stored", body = super::openapi::ErrorBody),
    )
)]
pub async fn add_ban(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<TokenParam>, QueryRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let Query(params) = params?;
    let identity = moderator(&state, &caller, params.token.as_deref()).await?;
    let bytes = super::http::read_body(&state, body).await?;
    let order: BanBody = json_body(
        &bytes,
        r#"{"user": ID, "room"?, "duration"?: SECONDS, "reason"?, "mode"?: "ban"|"mute"}"#,
    )?;
    let order = BanOrder {
        user: order.user,
        room: order.room,
        mode: order.mode,
        reason: order.reason,
        duration: order.duration.map(Duration::from_secs),
    };
    let ban = state.moderation.ban(order, &actor(&identity)).await?;
    Ok((StatusCode::CREATED, Json(ban)).into_response())
}

/// `GET /api/bans`' query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BansQuery {
    /// Only this user's.
    user: Option<String>,
    /// Only those covering this room (bans of every room included).
    room: Option<String>,
    /// The caller's token, when not in `Authorization: Bearer`.
    token: Option<String>,
}

/// `GET /api/bans`: the bans and mutes in force, oldest first, with who set them and when.
#[utoipa::path(
    get,
    path = "/api/bans", tag = "server",
    params(BansQuery),
    responses(
        (status = 200, description = "The bans in force", body = Object),
        (status = 400, description = "An invalid room", body = super::openapi::ErrorBody),
        (status = 401, description = "No valid token or key", body = super::openapi::ErrorBody),
        (status = 403, description = "Not a moderator", body = super::openapi::ErrorBody),
        (status = 503, description = "Cannot be read", body = super::openapi::ErrorBody),
    )
)]
pub async fn bans(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<BansQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(params) = params?;
    moderator(&state, &caller, params.token.as_deref()).await?;
    let room = params.room.as_deref().map(RoomName::parse).transpose()?;
    let bans = state
        .moderation
        .stored(params.user.as_deref(), room.as_ref())
        .await?;
    Ok(Json(serde_json::json!({ "bans": bans })))
}

/// `DELETE /api/bans/{id}`: lifts a ban or mute on every node.
#[utoipa::path(
    delete,
    path = "/api/bans/{id}", tag = "server",
    params(("id" = String, Path, description = "The ban's id"), super::openapi::TokenQuery),
    responses(
        (status = 200, description = "Lifted", body = Object),
        (status = 401, description = "No valid token or key", body = super::openapi::ErrorBody),
        (status = 403, description = "Not a moderator", body = super::openapi::ErrorBody),
        (status = 404, description = "No such ban", body = super::openapi::ErrorBody),
        (status = 503, description = "Cannot be stored", body = super::openapi::ErrorBody),
    )
)]
pub async fn lift_ban(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    params: Result<Query<TokenParam>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Path(id) = path?;
    let Query(params) = params?;
    moderator(&state, &caller, params.token.as_deref()).await?;
    match state.moderation.lift(&id).await? {
        true => Ok(Json(serde_json::json!({ "lifted": id }))),
        false => Err(ApiError::NotFound),
    }
}

/// `POST /api/broadcast`'s body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BroadcastBody {
    /// 1 to 100 distinct rooms.
    #[schema(value_type = Vec<String>)]
    rooms: Vec<RoomName>,
    /// Any JSON value, stored and delivered unchanged in each room.
    #[schema(value_type = Value)]
    message: Box<RawValue>,
    /// With the server key only: the user it is from (a moderator's token: the moderator).
    user: Option<Author>,
    /// An idempotency key (1-64 characters), per room: the same broadcast sent again within
    /// LIVECHAT_DEDUPE_WINDOW is not stored twice.
    nonce: Option<String>,
}

/// One room's part of a broadcast.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Broadcasted {
    #[schema(value_type = String)]
    room: RoomName,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ts: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    epoch: Option<Epoch>,
    /// Why it could not be written to this room.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// `POST /api/broadcast`: one message to many rooms, each with its own id (atomic per room:
/// each room has it, in its order, or does not). 503 when any room could not be written (the
/// answer lists which; sending it again with its nonce writes only those).
#[utoipa::path(
    post,
    path = "/api/broadcast", tag = "server",
    params(super::openapi::TokenQuery),
    request_body = BroadcastBody,
    responses(
        (status = 200, description = "Written to every room: `{\"rooms\": [{room, id, ts, epoch}]}`", body = Object),
        (status = 400, description = "Not such a body, no rooms, more than 100, one twice", body = super::openapi::ErrorBody),
        (status = 401, description = "No valid token or key", body = super::openapi::ErrorBody),
        (status = 403, description = "Not a moderator", body = super::openapi::ErrorBody),
        (status = 413, description = "Larger than LIVECHAT_MAX_MESSAGE_BYTES", body = super::openapi::ErrorBody),
        (status = 503, description = "Some rooms could not be written: `{\"error\", \"rooms\": [...]}`, each with its id or error", body = Object),
    )
)]
pub async fn broadcast(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<TokenParam>, QueryRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let Query(params) = params?;
    let identity = moderator(&state, &caller, params.token.as_deref()).await?;
    let bytes = super::http::read_body(&state, body).await?;
    let order: BroadcastBody = json_body(
        &bytes,
        r#"{"rooms": [ROOM, ...], "message": X, "user"?, "nonce"?}"#,
    )?;
    if order.rooms.is_empty() || order.rooms.len() > MAX_BROADCAST_ROOMS {
        return Err(ApiError::BadRequest(format!(
            "`rooms` must name 1 to {MAX_BROADCAST_ROOMS} rooms"
        )));
    }
    let mut distinct = order.rooms.clone();
    distinct.sort();
    distinct.dedup();
    if distinct.len() != order.rooms.len() {
        return Err(ApiError::BadRequest("`rooms` names a room twice".into()));
    }
    let nonce = order
        .nonce
        .as_deref()
        .map(Nonce::parse)
        .transpose()
        .map_err(|bad| ApiError::BadRequest(bad.to_string()))?;
    let user = match identity.is_server {
        true => order.user.map(Arc::new),
        false => identity.user.clone(),
    };
    let metrics = &state.metrics;
    let published = join_all(order.rooms.iter().map(|room| {
        state.engine.publish(Draft {
            room: room.clone(),
            message: order.message.clone(),
            user: user.clone(),
            nonce: nonce.clone(),
            reply_to: None,
        })
    }))
    .await;
    let mut failed = 0;
    let rooms: Vec<Broadcasted> = order
        .rooms
        .into_iter()
        .zip(published)
        .map(|(room, result)| match result {
            Ok(accepted) => {
                metrics.published(accepted.original.is_none());
                Broadcasted {
                    room,
                    id: Some(accepted.id),
                    ts: Some(accepted.ts),
                    epoch: Some(accepted.epoch),
                    error: None,
                }
            }
            Err(error) => {
                failed += 1;
                metrics.publish_error(error.metric());
                Broadcasted {
                    room,
                    id: None,
                    ts: None,
                    epoch: None,
                    error: Some(error.to_string()),
                }
            }
        })
        .collect();
    if failed == 0 {
        return Ok(Json(serde_json::json!({ "rooms": rooms })).into_response());
    }
    tracing::warn!(
        failed,
        of = rooms.len(),
        "a broadcast was not written to every room"
    );
    let answer = serde_json::json!({
        "error": format!("{failed} of {} rooms could not be written", rooms.len()),
        "rooms": rooms,
    });
    Ok((StatusCode::SERVICE_UNAVAILABLE, Json(answer)).into_response())
}

/// `GET /api/rooms/{room}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RoomInfo {
    #[schema(value_type = String)]
    room: RoomName,
    /// Connections in the room, on every node.
    members: u64,
    users: Vec<UserCount>,
    /// The room's last message id, and the numbering it counts in.
    last_id: u64,
    #[schema(value_type = String)]
    epoch: Epoch,
    /// Messages and their bytes held in history.
    messages: u64,
    bytes: u64,
    /// Bans and mutes in force in it (those of every room included).
    bans: Vec<Ban>,
}

/// `GET /api/rooms/{room}`: its members, numbering, what history holds of it, its bans.
#[utoipa::path(
    get,
    path = "/api/rooms/{room}", tag = "server",
    params(("room" = String, Path, description = "The room"), super::openapi::TokenQuery),
    responses(
        (status = 200, description = "What is known of the room", body = RoomInfo),
        (status = 400, description = "An invalid room", body = super::openapi::ErrorBody),
        (status = 401, description = "No valid token or key", body = super::openapi::ErrorBody),
        (status = 403, description = "Not a moderator", body = super::openapi::ErrorBody),
        (status = 503, description = "Cannot be read", body = super::openapi::ErrorBody),
    )
)]
pub async fn room(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    params: Result<Query<TokenParam>, QueryRejection>,
) -> Result<Json<RoomInfo>, ApiError> {
    let Path(room) = path?;
    let Query(params) = params?;
    let room = RoomName::parse(&room)?;
    moderator(&state, &caller, params.token.as_deref()).await?;
    let (presence, stats, bans) = tokio::join!(
        state.engine.presence(&room),
        state.engine.room_stats(&room),
        state.moderation.stored(None, Some(&room)),
    );
    let (presence, (stats, epoch), bans) = (presence?, stats?, bans?);
    Ok(Json(RoomInfo {
        room,
        members: presence.members,
        users: presence.users,
        last_id: stats.last_id,
        epoch,
        messages: stats.messages,
        bytes: stats.bytes,
        bans,
    }))
}

/// `DELETE /api/users/{user}/messages`' query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ErasureQuery {
    /// Where to go on: the `next` of the previous answer (absent: from the start).
    from: Option<String>,
    /// Stored messages to look at in this pass: 1 to 5,000 (the default).
    #[param(minimum = 1, maximum = 5000)]
    limit: Option<usize>,
    /// The caller's token, when not in `Authorization: Bearer`.
    token: Option<String>,
}

/// One pass of `DELETE /api/users/{user}/messages`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Erasure {
    user: String,
    /// The user's messages deleted in this pass.
    deleted: u64,
    /// Stored messages looked at in this pass (at most `limit`).
    scanned: u64,
    /// Call again with `?from=` this; `null`: every stored message was looked at.
    next: Option<String>,
    done: bool,
}

/// `DELETE /api/users/{user}/messages`: deletes a user's messages (account deletion), as a
/// moderator's deletion does (tombstones; members with metadata are told), looking at up to
/// 5,000 stored messages per call (`limit`); the answer says how far it got and where to go on.
#[utoipa::path(
    delete,
    path = "/api/users/{user}/messages", tag = "server",
    params(("user" = String, Path, description = "The user: its id, or with auth off its chosen name"), ErasureQuery),
    responses(
        (status = 200, description = "One pass done", body = Erasure),
        (status = 400, description = "An invalid `from`", body = super::openapi::ErrorBody),
        (status = 401, description = "No valid token or key", body = super::openapi::ErrorBody),
        (status = 403, description = "Not a moderator", body = super::openapi::ErrorBody),
        (status = 503, description = "The store cannot be read or written; call again with the same `from`", body = super::openapi::ErrorBody),
    )
)]
pub async fn erase_user(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    params: Result<Query<ErasureQuery>, QueryRejection>,
) -> Result<Json<Erasure>, ApiError> {
    let Path(user) = path?;
    let Query(params) = params?;
    let identity = moderator(&state, &caller, params.token.as_deref()).await?;
    let from = params.from.as_deref().map(parse_place).transpose()?;
    let limit = match params.limit {
        None => MESSAGES_PER_PASS,
        Some(limit @ 1..=MESSAGES_PER_PASS) => limit,
        Some(_) => {
            return Err(ApiError::BadParameter {
                name: "limit",
                reason: format!("must be 1 to {MESSAGES_PER_PASS}"),
            });
        }
    };
    let authored = state.engine.authored(&user, from, limit).await?;
    let by = Arc::new(Author {
        id: None,
        name: Some(actor(&identity)),
    });
    let changes = authored.found.into_iter().map(|place| {
        state.engine.change(Change {
            room: place.room,
            id: place.id,
            by: by.clone(),
            moderator: true,
            kind: ChangeKind::Delete,
        })
    });
    let mut deleted = 0;
    for result in join_all(changes).await {
        match result {
            Ok(Ok(_)) => deleted += 1,
            // Deleted meanwhile, or trimmed from history: nothing left to erase.
            Ok(Err(
                ChangeRefused::Gone { .. }
                | ChangeRefused::NotFound { .. }
                | ChangeRefused::Deleted { .. },
            )) => {}
            Ok(Err(refused)) => return Err(refused.into()),
            Err(error) => return Err(error.into()),
        }
    }
    let next = authored
        .next
        .map(|place| format!("{}:{}", place.id, place.room));
    Ok(Json(Erasure {
        user,
        deleted,
        scanned: authored.scanned,
        done: next.is_none(),
        next,
    }))
}

/// `ID:ROOM`, as `next` says.
fn parse_place(from: &str) -> Result<Place, ApiError> {
    let bad = || ApiError::BadParameter {
        name: "from",
        reason: format!("`{from}` is not a place given as `next`"),
    };
    let (id, room) = from.split_once(':').ok_or_else(bad)?;
    Ok(Place {
        id: id.parse().map_err(|_| bad())?,
        room: RoomName::parse(room).map_err(|_| bad())?,
    })
}
