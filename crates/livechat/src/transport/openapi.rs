//! The OpenAPI 3.1 document of the HTTP API, generated from the handlers' annotations
//! (`utoipa`), served at `GET /openapi.json` and kept in the repository as `docs/openapi.json`.
//! The WebSocket protocol past the handshake is in `docs/asyncapi.yaml`.

use axum::Json;
use serde::Serialize;
use utoipa::{IntoParams, OpenApi, ToSchema};

/// `POST /chat/send/`'s body.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct SendBody {
    /// Any JSON value, stored and delivered unchanged.
    #[schema(value_type = Value)]
    message: serde_json::Value,
    /// The room; else `?room=`, else the default room.
    #[schema(pattern = "^([A-Za-z0-9_-]{1,94}|dm:[A-Za-z0-9_.@+-]{1,40}:[A-Za-z0-9_.@+-]{1,40})$")]
    room: Option<String>,
    /// Auth off: the name the sender chose (1-64 characters).
    name: Option<String>,
    /// With the server key only: the user a backend publishes for.
    user: Option<crate::message::Author>,
    /// An idempotency key (1-64 characters): the same nonce again within
    /// LIVECHAT_DEDUPE_WINDOW gets the first answer with `"duplicate": true`.
    #[schema(min_length = 1, max_length = 64)]
    nonce: Option<String>,
}

/// `{"error": "..."}`, for every refusal.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    error: String,
}

/// A refusal over the rate limit: also a `Retry-After` header, in seconds.
#[derive(Serialize, ToSchema)]
pub struct RateLimitedBody {
    error: String,
    retry_after_ms: u64,
}

/// `?room=`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct RoomQuery {
    /// The room (absent: from the body, else the default room).
    #[param(pattern = "^([A-Za-z0-9_-]{1,94}|dm:[A-Za-z0-9_.@+-]{1,40}:[A-Za-z0-9_.@+-]{1,40})$")]
    room: Option<String>,
}

/// `?token=`: the caller's token, for clients that cannot set `Authorization: Bearer` (which
/// is preferred: a URL may be logged on its way).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct TokenQuery {
    /// A JWT (or the server key), when auth is required.
    token: Option<String>,
}

/// `?name=`: with auth off, the name a caller chose (whose read positions).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct NameQuery {
    /// 1 to 64 characters.
    name: Option<String>,
}

/// `GET /chat/history/`'s query.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct HistoryQueryParams {
    /// The room (absent: the default room).
    #[param(pattern = "^([A-Za-z0-9_-]{1,94}|dm:[A-Za-z0-9_.@+-]{1,40}:[A-Za-z0-9_.@+-]{1,40})$")]
    room: Option<String>,
    /// At most this many messages (default 50, at most 1000).
    #[param(minimum = 0, maximum = 9_223_372_036_854_775_807_i64)]
    limit: Option<u64>,
    /// Only messages with a smaller id.
    #[param(minimum = 0, maximum = 9_223_372_036_854_775_807_i64)]
    before: Option<u64>,
    /// Only messages with a greater id.
    #[param(minimum = 0, maximum = 9_223_372_036_854_775_807_i64)]
    after: Option<u64>,
}

/// The room a connection follows.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct RoomPath {
    /// The room, or a direct-message room `dm:A:B`.
    #[param(pattern = "^([A-Za-z0-9_-]{1,94}|dm:[A-Za-z0-9_.@+-]{1,40}:[A-Za-z0-9_.@+-]{1,40})$")]
    room: String,
}

/// The switches of a connection that follows a room (WebSocket or event stream).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ConnectQuery {
    /// 1, true or yes: frames with id, room, ts, user, and changes to stored messages.
    meta: Option<String>,
    /// A JWT, when auth is required.
    token: Option<String>,
    /// Auth off: the name the client chose.
    name: Option<String>,
    /// Resume: every message after this id, then live ones (docs/asyncapi.yaml: gap, reset,
    /// caught_up).
    #[param(minimum = 0, maximum = 9_223_372_036_854_775_807_i64)]
    since: Option<u64>,
    /// With since: the epoch the id counts in; another epoch gets a reset.
    epoch: Option<String>,
    /// 1, true or yes: presence and typing events (docs/asyncapi.yaml).
    presence: Option<String>,
    /// 1, true or yes: read receipts.
    receipts: Option<String>,
}

/// `GET /chat/presence/`'s query.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct PresenceQuery {
    /// The room (absent: the default room).
    #[param(pattern = "^([A-Za-z0-9_-]{1,94}|dm:[A-Za-z0-9_.@+-]{1,40}:[A-Za-z0-9_.@+-]{1,40})$")]
    room: Option<String>,
}

/// `GET /healthz` and `GET /readyz`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    status: String,
    /// Why not ready (503 only).
    reason: Option<String>,
    /// `/readyz` with the Django Channels layer bridge on: whether the layer's Redis answers
    /// (it does not change the status: the layer is not livechat's store).
    channels_layer: Option<crate::bridge::LayerStatus>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "livechat",
        description = "A real-time chat server compatible with the Django Channels live chat API \
                       (docs/live-chat-api.md). WebSocket frames: docs/asyncapi.yaml."
    ),
    paths(
        super::http::send,
        super::http::history,
        super::http::rooms,
        super::http::presence,
        super::changes::edit,
        super::changes::delete,
        super::changes::react,
        super::changes::unreact,
        super::reads::read,
        super::reads::unread,
        super::directs::open,
        super::directs::list,
        super::api::disconnect,
        super::api::add_ban,
        super::api::bans,
        super::api::lift_ban,
        super::api::broadcast,
        super::api::room,
        super::api::erase_user,
        super::http::healthz,
        super::http::readyz,
        super::http::metrics,
        super::ws::connect,
        super::sse::connect,
        super::page::client_library,
        openapi_json,
    ),
    components(schemas(ErrorBody, RateLimitedBody, Health, SendBody))
)]
pub struct ApiDoc;

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200, description = "The OpenAPI document", content_type = "application/json")))]
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The copy in the repository is the document the code generates.
    #[test]
    fn docs_openapi_json_is_up_to_date() {
        let generated = ApiDoc::openapi().to_pretty_json().unwrap() + "\n";
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/openapi.json is stale: run UPDATE_OPENAPI=1 cargo test -p livechat --lib openapi"
        );
    }
}
