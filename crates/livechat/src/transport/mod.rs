//! Transport: the HTTP and WebSocket routes on one port, and the state they share.
//!
//! Handlers turn requests and frames into calls on the engine (publish, history) and the hub
//! (join a room); they own no chat state themselves.

mod admission;
mod api;
mod caller;
mod changes;
mod client_ip;
mod directs;
mod entry;
mod error;
mod hooked;
mod http;
mod openapi;
mod origin;
mod page;
pub(crate) mod parking;
mod pending;
mod reads;
mod resume;
mod serve;
mod session;
pub(crate) mod shared_tcp;
mod sse;
mod tls;
mod upgrade;
mod ws;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use tokio_util::task::TaskTracker;

pub use admission::Admission;
pub use client_ip::TrustedProxies;
pub use error::ApiError;
pub use origin::OriginPolicy;
pub use serve::serve;
pub use tls::{TlsError, acceptor as tls_acceptor};
pub use upgrade::{Socket, Upgrade};

use crate::auth::{Access, Auth};
use crate::engine::Engine;
use crate::hooks::Hooks;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::moderation::Moderation;
use crate::presence::Roster;
use crate::rate::{HttpLimiter, RateLimit};
use crate::receipts::Receipts;
use crate::room::RoomName;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub hub: Arc<Hub>,
    /// Who is in each room, as this node knows it (the first presence frame of a connection).
    pub roster: Arc<Roster>,
    pub engine: Arc<dyn Engine>,
    pub default_room: RoomName,
    pub max_message_bytes: usize,
    pub history_page_bytes: usize,
    /// Most messages replayed to a client resuming with `?since=`.
    pub replay_max: usize,
    /// Every open WebSocket connection, so that shutdown can wait for them to close.
    pub connections: TaskTracker,
    /// Idle WebSocket connections without a task of their own.
    pub parking: Arc<parking::Parking>,
    pub auth: Auth,
    pub origins: OriginPolicy,
    /// The publish rate limit, if one is set, and its buckets for HTTP callers.
    pub rate_limit: Option<(RateLimit, Arc<HttpLimiter>)>,
    pub admission: Arc<Admission>,
    pub trusted_proxies: TrustedProxies,
    pub request_timeout: std::time::Duration,
    /// How long a closing connection waits for its close frame to go out and be answered.
    pub close_timeout: std::time::Duration,
    /// Served over TLS: the server's own origin is `https://`.
    pub tls: bool,
    pub metrics: Arc<Metrics>,
    /// `GET /metrics` on this port (false: it has an address of its own).
    pub metrics_here: bool,
    /// permessage-deflate is agreed with clients that offer it (`LIVECHAT_COMPRESSION`).
    pub compression: bool,
    /// The chat page is served (`LIVECHAT_PAGE`).
    pub page: bool,
    /// Who may read history and list rooms (`LIVECHAT_HISTORY_READS`, `LIVECHAT_ROOM_LIST`).
    pub history_reads: Access,
    pub room_list: Access,
    /// The app's connect and publish hooks, where set.
    pub hooks: Hooks,
    /// Bans and mutes, and what moderators do.
    pub moderation: Arc<Moderation>,
    /// Read receipts gathered for the rooms' members.
    pub receipts: Arc<Receipts>,
    /// The Django Channels layer bridge, when on (its state is part of `/readyz`).
    pub bridge: Option<Arc<crate::bridge::Bridge>>,
}

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// Every API route, with and without the trailing slash, as existing clients may use either;
/// the chat page; and `/metrics` unless it is served on an address of its own.
pub fn router(state: AppState) -> Router {
    let metrics = if state.metrics_here {
        metrics_router()
    } else {
        Router::new()
    };
    let page = if state.page {
        page::routes()
    } else {
        Router::new()
    };
    Router::new()
        .merge(page::client_library_routes())
        .route("/ws/chat/{room}/", get(ws::connect))
        .route("/ws/chat/{room}", get(ws::connect))
        .route("/sse/chat/{room}/", get(sse::connect))
        .route("/sse/chat/{room}", get(sse::connect))
        .route("/chat/send/", post(http::send))
        .route("/chat/send", post(http::send))
        .route("/chat/history/", get(http::history))
        .route("/chat/history", get(http::history))
        .route(
            "/chat/history/{room}/{id}",
            axum::routing::patch(changes::edit).delete(changes::delete),
        )
        .route("/chat/history/{room}/{id}/reactions", post(changes::react))
        .route(
            "/chat/history/{room}/{id}/reactions/{emoji}",
            axum::routing::delete(changes::unreact),
        )
        .route("/chat/rooms/", get(http::rooms))
        .route("/chat/rooms", get(http::rooms))
        .route("/chat/read/", post(reads::read))
        .route("/chat/read", post(reads::read))
        .route("/chat/unread/", get(reads::unread))
        .route("/chat/unread", get(reads::unread))
        .route("/chat/dm/", post(directs::open).get(directs::list))
        .route("/chat/dm", post(directs::open).get(directs::list))
        .route("/chat/presence/", get(http::presence))
        .route("/chat/presence", get(http::presence))
        .route("/api/disconnect", post(api::disconnect))
        .route("/api/bans", post(api::add_ban).get(api::bans))
        .route("/api/bans/{id}", axum::routing::delete(api::lift_ban))
        .route("/api/broadcast", post(api::broadcast))
        .route("/api/rooms/{room}", get(api::room))
        .route(
            "/api/users/{user}/messages",
            axum::routing::delete(api::erase_user),
        )
        .route("/healthz", get(http::healthz))
        .route("/readyz", get(http::readyz))
        .route("/openapi.json", get(openapi::openapi_json))
        .merge(page)
        .merge(metrics)
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            origin::guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access_log,
        ))
        .with_state(state)
}

/// `GET /metrics` alone, for its own address (`LIVECHAT_METRICS_BIND`) or the main port.
pub fn metrics_router() -> Router<AppState> {
    Router::new().route("/metrics", get(http::metrics))
}

/// Counts every request by route pattern and status; at debug level, one line per request:
/// method, path (never the query, which may hold a token), status, time to the answer.
async fn access_log(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let debug = tracing::enabled!(tracing::Level::DEBUG);
    let (method, path) = match debug {
        true => (
            Some(request.method().clone()),
            request.uri().path().to_owned(),
        ),
        false => (None, String::new()),
    };
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    state.metrics.http_request(&route, status);
    if let Some(method) = method {
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        tracing::debug!(%method, path, status, ms, "request");
    }
    response
}
