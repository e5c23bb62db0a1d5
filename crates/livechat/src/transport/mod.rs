//! Transport: the HTTP and WebSocket routes on one port, and the state they share.
//!
//! Handlers turn requests and frames into calls on the engine (publish, history) and the hub
//! (join a room); they own no chat state themselves.

mod admission;
mod caller;
mod client_ip;
mod error;
mod http;
mod origin;
mod page;
mod serve;
mod session;
mod tls;
mod upgrade;
mod ws;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use tokio_util::task::TaskTracker;

pub use admission::Admission;
pub use client_ip::TrustedProxies;
pub use error::ApiError;
pub use origin::OriginPolicy;
pub use serve::serve;
pub use tls::{TlsError, acceptor as tls_acceptor};
pub use upgrade::{Socket, Upgrade};

use crate::auth::Auth;
use crate::engine::Engine;
use crate::hub::Hub;
use crate::rate::{HttpLimiter, RateLimit};
use crate::room::RoomName;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub hub: Arc<Hub>,
    pub engine: Arc<dyn Engine>,
    pub default_room: RoomName,
    pub max_message_bytes: usize,
    pub history_page_bytes: usize,
    /// Every open WebSocket connection, so that shutdown can wait for them to close.
    pub connections: TaskTracker,
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
/// and the chat page.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/ws/chat/{room}/", get(ws::connect))
        .route("/ws/chat/{room}", get(ws::connect))
        .route("/chat/send/", post(http::send))
        .route("/chat/send", post(http::send))
        .route("/chat/history/", get(http::history))
        .route("/chat/history", get(http::history))
        .route("/chat/rooms/", get(http::rooms))
        .route("/chat/rooms", get(http::rooms))
        .route("/healthz", get(http::healthz))
        .route("/readyz", get(http::readyz))
        .merge(page::routes())
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            origin::guard,
        ))
        .layer(axum::middleware::from_fn(access_log))
        .with_state(state)
}

/// One debug line per request: method, path (never the query, which may hold a token), status,
/// time to the answer. Nothing is measured unless debug lines are on.
async fn access_log(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return next.run(request).await;
    }
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    tracing::debug!(
        %method,
        path,
        status = response.status().as_u16(),
        ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    response
}
