//! Changes to stored messages over HTTP (`crate::change`): `PATCH` and `DELETE
//! /chat/history/{room}/{id}` edit and delete, `POST /chat/history/{room}/{id}/reactions` and
//! `DELETE .../reactions/{emoji}` react and take a reaction back. The answer is the event the
//! room's members with metadata receive.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::caller::{Caller, Identified, Who};
use super::{ApiError, AppState};
use crate::auth::AuthError;
use crate::change::{Change, ChangeKind, ChangeRefused, Changed, Emoji};
use crate::hooks::Transport;
use crate::message::Author;
use crate::metrics::PublishError;
use crate::room::RoomName;

/// `PATCH`'s body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct EditBody {
    /// The message's new content: any JSON value.
    #[schema(value_type = Value)]
    message: Box<RawValue>,
}

/// `POST .../reactions`' body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ReactBody {
    /// 1 to 16 bytes.
    emoji: String,
}

/// `PATCH /chat/history/{room}/{id}` `{"message": X}`: edits a message (its author, or a
/// moderator).
#[utoipa::path(
    patch,
    path = "/chat/history/{room}/{id}", tag = "chat",
    params(
        ("room" = String, Path, description = "The room"),
        ("id" = u64, Path, description = "The message's id"),
        super::openapi::TokenQuery,
        super::openapi::NameQuery,
    ),
    request_body = EditBody,
    responses(
        (status = 200, description = "Edited: the `edited` event members receive", body = Object),
        (status = 400, description = "Not such a body, an invalid room or id", body = super::openapi::ErrorBody),
        (status = 401, description = "Auth required: no valid token", body = super::openapi::ErrorBody),
        (status = 403, description = "Not its author (nor a moderator), past the edit window, deleted, or a foreign browser origin", body = super::openapi::ErrorBody),
        (status = 404, description = "No such message in the room, or no longer stored", body = super::openapi::ErrorBody),
        (status = 413, description = "Larger than LIVECHAT_MAX_MESSAGE_BYTES", body = super::openapi::ErrorBody),
        (status = 503, description = "The store cannot be written", body = super::openapi::ErrorBody),
    )
)]
pub async fn edit(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<(String, String)>, PathRejection>,
    params: Result<Query<Who>, QueryRejection>,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let bytes = super::http::read_body(&state, body).await?;
    let EditBody { message } = serde_json::from_slice(&bytes)
        .map_err(|error| ApiError::BadRequest(format!("expected {{\"message\": X}}: {error}")))?;
    change(&state, &caller, path, params, ChangeKind::Edit(message)).await
}

/// `DELETE /chat/history/{room}/{id}`: deletes a message (its author, or a moderator): its text
/// and author are erased from storage; history keeps a tombstone.
#[utoipa::path(
    delete,
    path = "/chat/history/{room}/{id}", tag = "chat",
    params(
        ("room" = String, Path, description = "The room"),
        ("id" = u64, Path, description = "The message's id"),
        super::openapi::TokenQuery,
        super::openapi::NameQuery,
    ),
    responses(
        (status = 200, description = "Deleted: the `deleted` event members receive", body = Object),
        (status = 400, description = "An invalid room or id", body = super::openapi::ErrorBody),
        (status = 401, description = "Auth required: no valid token", body = super::openapi::ErrorBody),
        (status = 403, description = "Not its author (nor a moderator), past the edit window, deleted already, or a foreign browser origin", body = super::openapi::ErrorBody),
        (status = 404, description = "No such message in the room, or no longer stored", body = super::openapi::ErrorBody),
        (status = 503, description = "The store cannot be written", body = super::openapi::ErrorBody),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<(String, String)>, PathRejection>,
    params: Result<Query<Who>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    change(&state, &caller, path, params, ChangeKind::Delete).await
}

/// `POST /chat/history/{room}/{id}/reactions` `{"emoji": E}`: the caller reacts (once per emoji).
#[utoipa::path(
    post,
    path = "/chat/history/{room}/{id}/reactions", tag = "chat",
    params(
        ("room" = String, Path, description = "The room"),
        ("id" = u64, Path, description = "The message's id"),
        super::openapi::TokenQuery,
        super::openapi::NameQuery,
    ),
    request_body = ReactBody,
    responses(
        (status = 200, description = "The `reaction` event members receive (with the emoji's count)", body = Object),
        (status = 400, description = "An invalid room, id or emoji, or no name", body = super::openapi::ErrorBody),
        (status = 401, description = "Auth required: no valid token", body = super::openapi::ErrorBody),
        (status = 403, description = "Deleted, 20 kinds of reaction already, or a foreign browser origin", body = super::openapi::ErrorBody),
        (status = 404, description = "No such message in the room, or no longer stored", body = super::openapi::ErrorBody),
        (status = 429, description = "Over LIVECHAT_RATE_LIMIT", body = super::openapi::RateLimitedBody),
        (status = 503, description = "The store cannot be written", body = super::openapi::ErrorBody),
    )
)]
pub async fn react(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<(String, String)>, PathRejection>,
    params: Result<Query<Who>, QueryRejection>,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let bytes = super::http::read_body(&state, body).await?;
    let ReactBody { emoji } = serde_json::from_slice(&bytes)
        .map_err(|error| ApiError::BadRequest(format!("expected {{\"emoji\": E}}: {error}")))?;
    let emoji = Emoji::parse(&emoji).map_err(ApiError::BadRequest)?;
    change(
        &state,
        &caller,
        path,
        params,
        ChangeKind::React { emoji, on: true },
    )
    .await
}

/// `DELETE /chat/history/{room}/{id}/reactions/{emoji}`: takes the caller's reaction back.
#[utoipa::path(
    delete,
    path = "/chat/history/{room}/{id}/reactions/{emoji}", tag = "chat",
    params(
        ("room" = String, Path, description = "The room"),
        ("id" = u64, Path, description = "The message's id"),
        ("emoji" = String, Path, description = "The emoji (percent-encoded)"),
        super::openapi::TokenQuery,
        super::openapi::NameQuery,
    ),
    responses(
        (status = 200, description = "The `reaction` event members receive (`on`: false)", body = Object),
        (status = 400, description = "An invalid room, id or emoji, or no name", body = super::openapi::ErrorBody),
        (status = 401, description = "Auth required: no valid token", body = super::openapi::ErrorBody),
        (status = 403, description = "Deleted, or a foreign browser origin", body = super::openapi::ErrorBody),
        (status = 404, description = "No such message in the room, or no longer stored", body = super::openapi::ErrorBody),
        (status = 429, description = "Over LIVECHAT_RATE_LIMIT", body = super::openapi::RateLimitedBody),
        (status = 503, description = "The store cannot be written", body = super::openapi::ErrorBody),
    )
)]
pub async fn unreact(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<(String, String, String)>, PathRejection>,
    params: Result<Query<Who>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Path((room, id, emoji)) = path?;
    let emoji = Emoji::parse(&emoji).map_err(ApiError::BadRequest)?;
    let path = Ok(Path((room, id)));
    change(
        &state,
        &caller,
        path,
        params,
        ChangeKind::React { emoji, on: false },
    )
    .await
}

/// Who makes a change: the caller's user (the server key: a moderator with no user of its own).
fn changer(identified: &Identified, kind: &ChangeKind) -> Result<Arc<Author>, ApiError> {
    let identity = &identified.identity;
    if let Some(user) = identity
        .user
        .clone()
        .filter(|user| user.id.is_some() || user.name.is_some())
    {
        return Ok(user);
    }
    if identity.is_server {
        return Ok(Arc::new(Author {
            id: None,
            name: Some("moderator".into()),
        }));
    }
    let what = match kind {
        ChangeKind::React { .. } => "reactions",
        _ => "edits and deletions",
    };
    Err(ApiError::Auth(AuthError::Unnamed(what)))
}

async fn change(
    state: &AppState,
    caller: &Caller,
    path: Result<Path<(String, String)>, PathRejection>,
    params: Result<Query<Who>, QueryRejection>,
    kind: ChangeKind,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Path((room, id)) = path?;
    let Query(params) = params?;
    let room = RoomName::parse(&room)?;
    let id = id
        .parse::<u64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::BadParameter {
            name: "id",
            reason: format!("`{id}` is not a message id (a whole number, 1 or more)"),
        })?;
    let identified = caller
        .identify(
            state,
            params.token.as_deref(),
            params.name.as_deref(),
            Some(&room),
            Transport::Http,
        )
        .await?;
    let identity = &identified.identity;
    identity.check_room(&room)?;
    if !identity.is_server {
        state
            .moderation
            .may_write(identity.user.as_deref(), &room)
            .inspect_err(|_| state.metrics.publish_error(PublishError::Barred))?;
    }
    let by = changer(&identified, &kind)?;
    match &kind {
        ChangeKind::React { .. } => super::http::check_rate(state, identity, caller.client_ip())?,
        _ if !identity.can_publish && !identity.moderator => {
            state.metrics.publish_error(PublishError::Forbidden);
            return Err(AuthError::ReadOnly.into());
        }
        _ => {}
    }
    let change = Change {
        room,
        id,
        by,
        moderator: identity.moderator,
        kind,
    };
    let changed: Changed = state.engine.change(change).await??;
    Ok(Json(changed.event()))
}

impl From<ChangeRefused> for ApiError {
    fn from(refused: ChangeRefused) -> Self {
        ApiError::ChangeRefused(refused)
    }
}
