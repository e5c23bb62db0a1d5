//! HTTP routes: publish (`POST /chat/send/`), history (`GET /chat/history/`), health checks.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{ApiError, AppState};
use crate::message::{BadPublish, Draft, Publish, StoredMessage};
use crate::room::RoomName;
use crate::store::HistoryQuery;

const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 1000;

#[derive(Debug, Deserialize)]
pub struct RoomParam {
    room: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct SendAnswer {
    message: &'static str,
    room: RoomName,
    id: u64,
    ts: u64,
}

/// `POST /chat/send/` with `{"message": X, "room"?: R}` (or `?room=R`): stores and delivers X.
/// The body is read as JSON whatever its content type, as the seed did.
pub async fn send(
    State(state): State<AppState>,
    params: Result<Query<RoomParam>, QueryRejection>,
    body: Body,
) -> Result<Json<SendAnswer>, ApiError> {
    let Query(params) = params?;
    let limit = state.max_message_bytes;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|error| {
        let inner = error.into_inner();
        if inner.is::<http_body_util::LengthLimitError>() {
            ApiError::TooLarge(limit)
        } else {
            ApiError::BadBody(inner.to_string())
        }
    })?;
    let publish = Publish::parse(&bytes)?;
    let message = publish.message.ok_or(BadPublish::MissingMessage)?;
    let room = room_or_default(&state, publish.room.or(params.room).as_deref())?;
    let accepted = state
        .engine
        .publish(Draft {
            room: room.clone(),
            message,
            user: None,
        })
        .await?;
    Ok(Json(SendAnswer {
        message: "Message sent!",
        room,
        id: accepted.id,
        ts: accepted.ts,
    }))
}

#[derive(Debug, Deserialize)]
pub struct HistoryParams {
    room: Option<String>,
    limit: Option<String>,
    before: Option<String>,
    after: Option<String>,
}

#[derive(Serialize)]
struct HistoryAnswer {
    chat_history: Vec<StoredMessage>,
}

/// `GET /chat/history/?room=R&limit=N&before=ID&after=ID`: stored messages, oldest first.
pub async fn history(
    State(state): State<AppState>,
    params: Result<Query<HistoryParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params?;
    let limit = number(params.limit.as_deref(), "limit")?
        .map_or(DEFAULT_PAGE, |limit| (limit as usize).min(MAX_PAGE));
    let query = HistoryQuery {
        room: room_or_default(&state, params.room.as_deref())?,
        limit,
        before: number(params.before.as_deref(), "before")?,
        after: number(params.after.as_deref(), "after")?,
    };
    let chat_history = if query.limit == 0 {
        Vec::new()
    } else {
        state.engine.history(query).await?
    };
    Ok(Json(HistoryAnswer { chat_history }).into_response())
}

/// `GET /chat/rooms/`: rooms with members (on any node), with member counts.
pub async fn rooms(State(state): State<AppState>) -> Result<Response, ApiError> {
    let rooms = state.engine.rooms().await?;
    Ok(Json(json!({ "rooms": rooms })).into_response())
}

/// `GET /healthz`: the process is alive and serving.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 when publishes can be stored, 503 with the reason otherwise.
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
