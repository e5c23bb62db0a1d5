//! Read positions: how far a user (not a connection) has read in each room, moved forward by
//! `{"read": ID}` on a WebSocket or `POST /chat/read/`, shared by all of the user's connections on
//! every node (each of the others is told `{"event": "read", "room", "id"}`, so that a second tab
//! clears its badge), and the unread counts of `GET /chat/unread/`, computed from the rooms' last
//! ids (ids only grow), without reading history.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::caller::{Caller, Identified, Who};
use super::{ApiError, AppState};
use crate::auth::AuthError;
use crate::control::Control;
use crate::engine::EngineError;
use crate::hooks::Transport;
use crate::message::Author;
use crate::presence::user_key;
use crate::room::RoomName;

/// Moves `reader`'s read position in `room` forward to `id`, then tells the user's other
/// connections, on every node, where it is now (`except`: the member id that read), and the
/// room's members with read receipts on.
pub fn mark(
    state: &AppState,
    reader: Reader,
    room: RoomName,
    id: u64,
    except: Option<u64>,
) -> BoxFuture<'static, Result<u64, EngineError>> {
    let engine = state.engine.clone();
    let receipts = state.receipts.clone();
    let from = state.roster.node().to_owned();
    async move {
        let Reader {
            key: user,
            user: who,
        } = reader;
        let position = engine.mark_read(&user, &room, id).await?;
        receipts.seen(&room, who, position);
        let event = serde_json::json!({ "event": "read", "room": room, "id": position });
        let tell = Control::TellUser {
            user,
            event: event.to_string(),
            from,
            except,
        };
        engine.control(tell).await?;
        Ok(position)
    }
    .boxed()
}

/// `POST /chat/read/`'s body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ReadBody {
    #[schema(value_type = String)]
    room: RoomName,
    /// The last message id read.
    id: u64,
}

/// Where the caller's read position is now.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReadAnswer {
    #[schema(value_type = String)]
    room: RoomName,
    id: u64,
}

/// A named user, whose read positions are kept (by its user key).
pub struct Reader {
    key: String,
    user: Arc<Author>,
}

impl Reader {
    /// `None` for an anonymous user.
    pub fn of(user: Arc<Author>) -> Option<Self> {
        let key = user_key(&user)?.to_string();
        Some(Self { key, user })
    }
}

/// The caller: reads belong to named users.
fn reader(identified: &Identified) -> Result<Reader, ApiError> {
    identified
        .identity
        .user
        .clone()
        .and_then(Reader::of)
        .ok_or(ApiError::Auth(AuthError::Unnamed("read positions")))
}

/// `POST /chat/read/` `{"room", "id"}`: the caller has read `room` through `id` (its position
/// only moves forward).
#[utoipa::path(
    post,
    path = "/chat/read/", tag = "chat",
    params(super::openapi::TokenQuery, super::openapi::NameQuery),
    request_body = ReadBody,
    responses(
        (status = 200, description = "The read position now (never moved back)", body = ReadAnswer),
        (status = 400, description = "Not such a body, or no name to keep it for", body = super::openapi::ErrorBody),
        (status = 401, description = "Auth required: no valid token", body = super::openapi::ErrorBody),
        (status = 403, description = "Room not allowed, or a foreign browser origin", body = super::openapi::ErrorBody),
        (status = 503, description = "The store cannot be written", body = super::openapi::ErrorBody),
    )
)]
pub async fn read(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<Who>, QueryRejection>,
    body: axum::body::Body,
) -> Result<Json<ReadAnswer>, ApiError> {
    let Query(params) = params?;
    let bytes = super::http::read_body(&state, body).await?;
    let body: ReadBody = serde_json::from_slice(&bytes).map_err(|error| {
        ApiError::BadRequest(format!("expected {{\"room\": R, \"id\": ID}}: {error}"))
    })?;
    let identified = caller
        .identify(
            &state,
            params.token.as_deref(),
            params.name.as_deref(),
            Some(&body.room),
            Transport::Http,
        )
        .await?;
    identified.identity.check_room(&body.room)?;
    let user = reader(&identified)?;
    let id = mark(&state, user, body.room.clone(), body.id, None).await?;
    Ok(Json(ReadAnswer {
        room: body.room,
        id,
    }))
}

/// A room the caller has a read position in.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Unread {
    #[schema(value_type = String)]
    room: RoomName,
    /// Messages after the read position (deleted ones counted).
    unread: u64,
    last_id: u64,
    read_id: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UnreadAnswer {
    rooms: Vec<Unread>,
}

/// `GET /chat/unread/`: every room the caller has a read position in, with what is unread.
#[utoipa::path(
    get,
    path = "/chat/unread/", tag = "chat",
    params(super::openapi::TokenQuery, super::openapi::NameQuery),
    responses(
        (status = 200, description = "The caller's rooms, by name", body = UnreadAnswer),
        (status = 400, description = "No name to keep positions for", body = super::openapi::ErrorBody),
        (status = 401, description = "Auth required: no valid token", body = super::openapi::ErrorBody),
        (status = 403, description = "A foreign browser origin", body = super::openapi::ErrorBody),
        (status = 503, description = "The store cannot be read", body = super::openapi::ErrorBody),
    )
)]
pub async fn unread(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<Who>, QueryRejection>,
) -> Result<Json<UnreadAnswer>, ApiError> {
    let Query(params) = params?;
    let identified = caller
        .identify(
            &state,
            params.token.as_deref(),
            params.name.as_deref(),
            None,
            Transport::Http,
        )
        .await?;
    let reader = reader(&identified)?;
    let mut rooms: Vec<Unread> = state
        .engine
        .read_positions(&reader.key)
        .await?
        .into_iter()
        .filter(|position| identified.identity.may_enter(&position.room))
        .map(|position| Unread {
            unread: position.last_id.saturating_sub(position.read_id),
            room: position.room,
            last_id: position.last_id,
            read_id: position.read_id,
        })
        .collect();
    rooms.sort_by(|a, b| a.room.cmp(&b.room));
    Ok(Json(UnreadAnswer { rooms }))
}
