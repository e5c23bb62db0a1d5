//! Direct messages: a room between two signed-in users that only they (and the server key) can
//! join, read or post in, named by the server from their ids (`dm:A:B`, A < B; see
//! `crate::room`). `POST /chat/dm/` `{"with": USER}` opens one (listing it for both users);
//! `GET /chat/dm/` lists the caller's with the other user, the last message and what is unread.

use std::collections::HashMap;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use futures_util::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::caller::{Caller, TokenParam};
use super::{ApiError, AppState};
use crate::auth::{AuthError, Identity};
use crate::hooks::Transport;
use crate::message::StoredMessage;
use crate::presence::user_key;
use crate::room::{MAX_DIRECT_ID, RoomName};
use crate::store::HistoryQuery;

/// Rooms whose last message is read at once while listing.
const READ_AT_ONCE: usize = 16;

/// `POST /chat/dm/`'s body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct OpenBody {
    /// The other user's id (a token's `sub`).
    with: String,
}

/// A direct-message room.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Direct {
    #[schema(value_type = String)]
    room: RoomName,
    /// The other user's id.
    with: String,
}

/// The caller's id: direct messages are between signed-in users.
async fn signed_in(
    state: &AppState,
    caller: &Caller,
    token: Option<&str>,
) -> Result<(Identity, String), ApiError> {
    let identified = caller
        .identify(state, token, None, None, Transport::Http)
        .await?;
    let id = identified
        .identity
        .user
        .as_deref()
        .and_then(|user| user.id.clone())
        .ok_or(ApiError::Auth(AuthError::DirectNeedsUser))?;
    Ok((identified.identity, id))
}

/// `POST /chat/dm/` `{"with": USER}`: the direct-message room of the caller and `with`, listed
/// for both.
#[utoipa::path(
    post,
    path = "/chat/dm/", tag = "chat",
    params(super::openapi::TokenQuery),
    request_body = OpenBody,
    responses(
        (status = 200, description = "The room's name, to connect to", body = Direct),
        (status = 400, description = "Not such a body, oneself, or an id a room cannot name", body = super::openapi::ErrorBody),
        (status = 401, description = "Auth required: no valid token", body = super::openapi::ErrorBody),
        (status = 403, description = "Not a signed-in user (auth off), or a foreign browser origin", body = super::openapi::ErrorBody),
        (status = 503, description = "The store cannot be written", body = super::openapi::ErrorBody),
    )
)]
pub async fn open(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<TokenParam>, QueryRejection>,
    body: axum::body::Body,
) -> Result<Json<Direct>, ApiError> {
    let Query(params) = params?;
    let bytes = super::http::read_body(&state, body).await?;
    let OpenBody { with } = serde_json::from_slice(&bytes)
        .map_err(|error| ApiError::BadRequest(format!("expected {{\"with\": USER}}: {error}")))?;
    let (_, me) = signed_in(&state, &caller, params.token.as_deref()).await?;
    if with == me {
        return Err(ApiError::BadRequest(
            "a direct-message room is between two different users: `with` is you".into(),
        ));
    }
    let room = RoomName::direct(&me, &with).map_err(|_| {
        ApiError::BadRequest(format!(
            "no direct-message room for these users: ids in one are 1 to {MAX_DIRECT_ID} ASCII \
             letters, digits or '_', '-', '.', '@', '+'"
        ))
    })?;
    state.engine.open_direct(&room).await?;
    Ok(Json(Direct { room, with }))
}

/// One of the caller's direct-message rooms.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DirectSummary {
    #[schema(value_type = String)]
    room: RoomName,
    with: String,
    /// The latest message (`null`: none yet).
    last: Option<StoredMessage>,
    /// Messages after the caller's read position (deleted ones counted).
    unread: u64,
    last_id: u64,
    read_id: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DirectsAnswer {
    directs: Vec<DirectSummary>,
}

/// `GET /chat/dm/`: the caller's direct-message rooms (the 500 it opened or was opened with
/// last), the latest written first.
#[utoipa::path(
    get,
    path = "/chat/dm/", tag = "chat",
    params(super::openapi::TokenQuery),
    responses(
        (status = 200, description = "The caller's direct-message rooms", body = DirectsAnswer),
        (status = 401, description = "Auth required: no valid token", body = super::openapi::ErrorBody),
        (status = 403, description = "Not a signed-in user (auth off), or a foreign browser origin", body = super::openapi::ErrorBody),
        (status = 503, description = "The store cannot be read", body = super::openapi::ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<TokenParam>, QueryRejection>,
) -> Result<Json<DirectsAnswer>, ApiError> {
    let Query(params) = params?;
    let (identity, me) = signed_in(&state, &caller, params.token.as_deref()).await?;
    let reader = identity
        .user
        .as_deref()
        .and_then(user_key)
        .map(|key| key.to_string());
    let (rooms, positions) = tokio::try_join!(
        state.engine.directs(&me),
        state
            .engine
            .read_positions(reader.as_deref().unwrap_or_default()),
    )?;
    let read: HashMap<RoomName, u64> = positions
        .into_iter()
        .map(|position| (position.room, position.read_id))
        .collect();
    let mut directs: Vec<DirectSummary> = futures_util::stream::iter(rooms)
        .map(|room| {
            let query = HistoryQuery {
                room: room.clone(),
                limit: 1,
                before: None,
                after: None,
                max_bytes: state.history_page_bytes,
                newest_first: true,
                reader: reader.clone(),
            };
            let page = state.engine.history(query);
            let read_id = read.get(&room).copied().unwrap_or(0);
            let with = match room.direct_users() {
                Some((a, b)) if a == me => b.to_owned(),
                Some((a, _)) => a.to_owned(),
                None => String::new(),
            };
            async move {
                let page = page.await?;
                Ok::<_, ApiError>(DirectSummary {
                    room,
                    with,
                    last: page.messages.into_iter().next_back(),
                    unread: page.last_id.saturating_sub(read_id),
                    last_id: page.last_id,
                    read_id,
                })
            }
        })
        .buffer_unordered(READ_AT_ONCE)
        .try_collect()
        .await?;
    directs.sort_by(|a, b| {
        let ts = |summary: &DirectSummary| summary.last.as_ref().map_or(0, |last| last.ts);
        ts(b).cmp(&ts(a)).then_with(|| a.room.cmp(&b.room))
    });
    Ok(Json(DirectsAnswer { directs }))
}
