//! HTTP routes: publish (`POST /chat/send/`), history (`GET /chat/history/`), health checks.

use std::net::IpAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::caller::{Caller, Identified, TokenParam};
use super::{ApiError, AppState};
use crate::auth::{AuthError, Guarded, Identity};
use crate::engine::RoomCount;
use crate::epoch::Epoch;
use crate::hooks::{Judgement, Transport};
use crate::message::{BadPublish, Draft, Publish, StoredMessage};
use crate::metrics::PublishError;
use crate::room::RoomName;
use crate::store::{HistoryQuery, RecentRoom};

const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 1000;

#[derive(Debug, Deserialize)]
pub struct RoomParam {
    room: Option<String>,
    /// The caller's token, for clients that cannot set `Authorization` (as on the WebSocket).
    token: Option<String>,
}

/// The message was stored and delivered.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SendAnswer {
    /// Always "Message sent!", as the original service answered.
    message: &'static str,
    #[schema(value_type = String)]
    room: RoomName,
    id: u64,
    ts: u64,
    /// The room's epoch: `id` counts in it.
    #[schema(value_type = String)]
    epoch: Epoch,
    /// Its nonce was already published in the dedupe window: this is the first message's answer,
    /// and nothing was stored or delivered again.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    duplicate: bool,
}

/// `POST /chat/send/` with `{"message": X, "room"?: R}` (or `?room=R`): stores and delivers X.
/// The body is read as JSON whatever its content type, as the original service did (a browser page on
/// another site cannot post here: the origin guard refuses it first).
#[utoipa::path(
    post,
    path = "/chat/send/", tag = "chat",
    params(super::openapi::RoomQuery, super::openapi::TokenQuery),
    request_body(content = super::openapi::SendBody, description = "Read as JSON whatever its content type"),
    responses(
        (status = 200, description = "Stored (committed) and delivered", body = SendAnswer),
        (status = 400, description = "Invalid JSON, no `message`, invalid room or name", body = super::openapi::ErrorBody),
        (status = 401, description = "Auth required: no valid token", body = super::openapi::ErrorBody),
        (status = 403, description = "Room not allowed, read-only token, or a foreign browser origin", body = super::openapi::ErrorBody),
        (status = 408, description = "The body did not arrive in time", body = super::openapi::ErrorBody),
        (status = 413, description = "Larger than LIVECHAT_MAX_MESSAGE_BYTES", body = super::openapi::ErrorBody),
        (status = 429, description = "Over LIVECHAT_RATE_LIMIT", body = super::openapi::RateLimitedBody),
        (status = 503, description = "The message could not be stored", body = super::openapi::ErrorBody),
    )
)]
pub async fn send(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<RoomParam>, QueryRejection>,
    body: Body,
) -> Result<Json<SendAnswer>, ApiError> {
    let Query(params) = params?;
    let bytes = read_body(&state, body).await?;
    let publish = Publish::parse(&bytes)?;
    let room = room_or_default(&state, publish.room.or(params.room).as_deref())?;
    let Identified { identity, .. } = caller
        .identify(
            &state,
            params.token.as_deref(),
            publish.name.as_deref(),
            Some(&room),
            Transport::Http,
        )
        .await?;
    let message = publish.message.ok_or(BadPublish::MissingMessage)?;
    identity.check_room(&room)?;
    let metrics = &state.metrics;
    identity
        .check_publish()
        .inspect_err(|_| metrics.publish_error(PublishError::Forbidden))?;
    // The server key speaks for the app, which decides for itself whom it publishes for.
    if !identity.is_server {
        state
            .moderation
            .may_write(identity.user.as_deref(), &room)
            .inspect_err(|_| metrics.publish_error(PublishError::Barred))?;
    }
    check_rate(&state, &identity, caller.client_ip())
        .inspect_err(|_| metrics.publish_error(PublishError::RateLimited))?;
    let user = match identity.is_server {
        true => publish.user.map(Arc::new),
        false => identity.user,
    };
    let draft = Draft {
        room: room.clone(),
        message,
        user,
        nonce: publish.nonce,
        reply_to: publish.reply_to,
    };
    // The app judges its users' messages, not its own backend's (the server key).
    let draft = match &state.hooks.publish {
        Some(hook) if !identity.is_server => match hook.clone().judge(draft, Transport::Http).await
        {
            Judgement::Store(draft) => draft,
            Judgement::Refused { reason, .. } => {
                metrics.publish_error(PublishError::HookRefused);
                return Err(ApiError::PublishRefused(reason));
            }
            Judgement::Failed { error, .. } => {
                metrics.publish_error(PublishError::HookFailed);
                return Err(ApiError::PublishHookFailed(error));
            }
        },
        _ => draft,
    };
    let accepted = state
        .engine
        .publish(draft)
        .await
        .inspect_err(|error| metrics.publish_error(error.metric()))?;
    match accepted.original {
        Some(_) => metrics.duplicates.increment(1),
        None => metrics.published(true),
    }
    Ok(Json(SendAnswer {
        message: "Message sent!",
        room,
        id: accepted.id,
        ts: accepted.ts,
        epoch: accepted.epoch,
        duplicate: accepted.original.is_some(),
    }))
}

#[derive(Debug, Deserialize)]
pub struct HistoryParams {
    room: Option<String>,
    token: Option<String>,
    /// With auth off, the reader's chosen name: reactions say `me` for it.
    name: Option<String>,
    limit: Option<String>,
    before: Option<String>,
    after: Option<String>,
}

/// A page of history, oldest first.
#[derive(Serialize, utoipa::ToSchema)]
pub struct HistoryAnswer {
    chat_history: Vec<StoredMessage>,
    /// The room's epoch: the ids count in it.
    #[schema(value_type = String)]
    epoch: Epoch,
    /// The page stopped at its byte cap: `next` reads on.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    more: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<Cursor>,
}

/// Where to read on from a page cut by its byte cap: older messages with `before`, newer ones
/// with `after`.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Cursor {
    Before(u64),
    After(u64),
}

/// `GET /chat/history/?room=R&limit=N&before=ID&after=ID`: stored messages, oldest first.
#[utoipa::path(
    get,
    path = "/chat/history/", tag = "chat",
    params(super::openapi::HistoryQueryParams, super::openapi::TokenQuery, super::openapi::NameQuery),
    responses(
        (status = 200, description = "A page of stored messages, oldest first", body = HistoryAnswer),
        (status = 400, description = "Invalid room or parameter", body = super::openapi::ErrorBody),
        (status = 401, description = "Auth required: no valid token", body = super::openapi::ErrorBody),
        (status = 403, description = "Room not allowed, or a foreign browser origin", body = super::openapi::ErrorBody),
        (status = 503, description = "The store cannot be read", body = super::openapi::ErrorBody),
    )
)]
pub async fn history(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<HistoryParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params?;
    let (room, identity) = reader(
        &state,
        &caller,
        params.room,
        params.token,
        params.name.as_deref(),
    )
    .await?;
    let limit = number(params.limit.as_deref(), "limit")?
        .map_or(DEFAULT_PAGE, |limit| (limit as usize).min(MAX_PAGE));
    let query = HistoryQuery {
        room,
        limit,
        before: number(params.before.as_deref(), "before")?,
        after: number(params.after.as_deref(), "after")?,
        max_bytes: state.history_page_bytes,
        newest_first: params.after.is_none(),
        reader: identity
            .user
            .as_deref()
            .and_then(crate::presence::user_key)
            .map(|key| key.to_string()),
    };
    identity.check_room(&query.room)?;
    state
        .moderation
        .may_enter(identity.user.as_deref(), &query.room)?;
    match state.history_reads.check(&identity, Guarded::History) {
        Ok(()) => {}
        // What the original service answered, which its clients expect.
        Err(AuthError::TurnedOff(_)) => {
            return Ok(Json(json!({ "chat_history": [] })).into_response());
        }
        Err(refused) => return Err(refused.into()),
    }
    let newest_first = query.newest_first;
    let page = state.engine.history(query).await?;
    let next = match (page.more, newest_first) {
        (false, _) => None,
        (true, true) => page.messages.first().map(|m| Cursor::Before(m.id)),
        (true, false) => page.messages.last().map(|m| Cursor::After(m.id)),
    };
    let answer = HistoryAnswer {
        chat_history: page.messages,
        epoch: page.epoch,
        more: page.more,
        next,
    };
    Ok(Json(answer).into_response())
}

/// `?room=`, for `GET /chat/presence/`.
#[derive(Debug, Deserialize)]
pub struct PresenceParams {
    room: Option<String>,
    token: Option<String>,
}

/// `GET /chat/presence/?room=R`: who is in a room on every node: connections counted, named
/// users listed once with their connections (at most 1,000, by name).
#[utoipa::path(
    get,
    path = "/chat/presence/", tag = "chat",
    params(super::openapi::PresenceQuery, super::openapi::TokenQuery),
    responses(
        (status = 200, description = "Who is in the room", body = crate::presence::PresenceList),
        (status = 400, description = "Invalid room", body = super::openapi::ErrorBody),
        (status = 401, description = "Auth required: no valid token", body = super::openapi::ErrorBody),
        (status = 403, description = "Room not allowed, or a foreign browser origin", body = super::openapi::ErrorBody),
        (status = 503, description = "Redis unavailable", body = super::openapi::ErrorBody),
    )
)]
pub async fn presence(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<PresenceParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params?;
    let (room, identity) = reader(&state, &caller, params.room, params.token, None).await?;
    identity.check_room(&room)?;
    state
        .moderation
        .may_enter(identity.user.as_deref(), &room)?;
    Ok(Json(state.engine.presence(&room).await?).into_response())
}

/// `GET /chat/rooms/`: rooms with members (on any node), with member counts, and rooms written
/// lately; with auth on, only the rooms the caller may enter.
#[utoipa::path(
    get,
    path = "/chat/rooms/", tag = "chat",
    params(super::openapi::TokenQuery),
    responses(
        (status = 200, description = "Rooms with members", body = RoomsAnswer),
        (status = 401, description = "Auth required: no valid token", body = super::openapi::ErrorBody),
        (status = 403, description = "A foreign browser origin", body = super::openapi::ErrorBody),
        (status = 503, description = "Redis cannot be read", body = super::openapi::ErrorBody),
    )
)]
pub async fn rooms(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<TokenParam>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params?;
    let Identified { identity, .. } = caller
        .identify(&state, params.token.as_deref(), None, None, Transport::Http)
        .await?;
    state.room_list.check(&identity, Guarded::RoomList)?;
    let (rooms, recent) = tokio::try_join!(
        state.engine.rooms(),
        state.engine.recent_rooms(RECENT_ROOMS)
    )?;
    let (mut rooms, mut recent) = (rooms, recent);
    rooms.retain(|count| identity.may_enter(&count.room));
    recent.retain(|room| identity.may_enter(&room.room));
    Ok(Json(RoomsAnswer { rooms, recent }).into_response())
}

/// Rooms listed as recently written in `GET /chat/rooms/`.
const RECENT_ROOMS: usize = 20;

/// Rooms with members on any node, by name; and rooms written lately, whoever is in them.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RoomsAnswer {
    rooms: Vec<RoomCount>,
    /// Up to 20 rooms with stored messages, the latest written first.
    recent: Vec<RecentRoom>,
}

/// `GET /metrics`: Prometheus' text format.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let body = state.metrics.render(state.hub.room_count());
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// `GET /healthz`: the process is alive and serving.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "Alive", body = super::openapi::Health)))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 when publishes can be stored, 503 with the reason otherwise.
#[utoipa::path(
    get,
    path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Publishes can be stored", body = super::openapi::Health),
        (status = 503, description = "The store or Redis is unusable, or the server is stopping", body = super::openapi::Health),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Response {
    match state.engine.readiness() {
        Ok(()) => Json(json!({ "status": "ready" })).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "reason": reason.to_string() })),
        )
            .into_response(),
    }
}

/// A request's body, up to `LIVECHAT_MAX_MESSAGE_BYTES` (413 past it) and within the request
/// timeout (408).
pub(super) async fn read_body(state: &AppState, body: Body) -> Result<bytes::Bytes, ApiError> {
    let limit = state.max_message_bytes;
    let timeout = state.request_timeout;
    tokio::time::timeout(timeout, axum::body::to_bytes(body, limit))
        .await
        .map_err(|_| ApiError::Timeout(timeout))?
        .map_err(|error| {
            let inner = error.into_inner();
            if inner.is::<http_body_util::LengthLimitError>() {
                ApiError::TooLarge(limit)
            } else {
                ApiError::BadBody(inner.to_string())
            }
        })
}

/// The HTTP publish limit, per user (token `sub`) or else per client IP; the server key is a
/// backend publishing for many users and is not limited.
pub(super) fn check_rate(
    state: &AppState,
    identity: &Identity,
    client_ip: IpAddr,
) -> Result<(), ApiError> {
    let Some((_, limiter)) = &state.rate_limit else {
        return Ok(());
    };
    if identity.is_server {
        return Ok(());
    }
    let key = match identity.user.as_ref().and_then(|user| user.id.as_deref()) {
        Some(id) => format!("user:{id}"),
        None => format!("ip:{client_ip}"),
    };
    limiter
        .check(&key)
        .map_err(|retry_after_ms| ApiError::RateLimited { retry_after_ms })
}

/// The room a read names (else the default room), and who reads it.
async fn reader(
    state: &AppState,
    caller: &Caller,
    room: Option<String>,
    token: Option<String>,
    name: Option<&str>,
) -> Result<(RoomName, Identity), ApiError> {
    let room = room_or_default(state, room.as_deref())?;
    let Identified { identity, .. } = caller
        .identify(state, token.as_deref(), name, Some(&room), Transport::Http)
        .await?;
    Ok((room, identity))
}

fn room_or_default(state: &AppState, room: Option<&str>) -> Result<RoomName, ApiError> {
    match room {
        Some(room) => Ok(RoomName::parse(room)?),
        None => Ok(state.default_room.clone()),
    }
}

fn number(value: Option<&str>, name: &'static str) -> Result<Option<u64>, ApiError> {
    value
        .map(|value| {
            value.parse::<u64>().map_err(|_| ApiError::BadParameter {
                name,
                reason: format!("`{value}` is not a non-negative integer"),
            })
        })
        .transpose()
}
