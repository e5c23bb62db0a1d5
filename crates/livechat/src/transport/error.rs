//! Errors answered over HTTP: a status code and a body `{"error": "..."}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::admission::Refused;
use crate::auth::AuthError;
use crate::engine::EngineError;
use crate::message::{BadPublish, error_body};
use crate::moderation::{Barred, ModerationError};
use crate::room::InvalidRoom;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    BadPublish(#[from] BadPublish),
    #[error("invalid room: {0}")]
    InvalidRoom(#[from] InvalidRoom),
    #[error("invalid query parameter `{name}`: {reason}")]
    BadParameter { name: &'static str, reason: String },
    #[error("invalid request: {0}")]
    BadRequest(String),
    #[error("not a WebSocket handshake: {0}")]
    NotWebSocket(String),
    /// A plain HTTP request (no `Upgrade: websocket`) to a WebSocket route that would have been
    /// let in: 426. Clients whose WebSocket failed before opening ask this way whether the
    /// server refused them (401, 403, ...) or something on the way did (docs/protocol.md).
    #[error("upgrade required: this route is a WebSocket; the server would let this request in")]
    UpgradeRequired,
    #[error("request body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("cannot read request body: {0}")]
    BadBody(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("not found")]
    NotFound,
    #[error(transparent)]
    Unavailable(#[from] EngineError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("origin not allowed")]
    OriginNotAllowed,
    #[error("rate limited")]
    RateLimited { retry_after_ms: u64 },
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error("the request did not arrive within {0:?}")]
    Timeout(std::time::Duration),
    /// The connect hook said no (401 or 403), with the app's reason.
    #[error("{reason}")]
    HookRefused { status: u16, reason: String },
    /// The connect hook could not be asked: nobody gets in (its failure is logged).
    #[error("sign-in unavailable: the app could not be asked who you are; try again shortly")]
    SignInUnavailable(crate::hooks::HookError),
    /// The publish hook refused the message, with the app's reason.
    #[error("{0}")]
    PublishRefused(String),
    #[error("message refused: the publish hook failed: {0}")]
    PublishHookFailed(crate::hooks::HookError),
    #[error(transparent)]
    ChangeRefused(crate::change::ChangeRefused),
    /// Banned or muted: the body says why and until when.
    #[error(transparent)]
    Barred(#[from] Barred),
    #[error(transparent)]
    Moderation(#[from] ModerationError),
    /// Needs a moderator (the API key, or a token with `moderate`).
    #[error("not allowed: this needs the server's API key or a token with the moderate claim")]
    NotModerator,
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::BadPublish(_)
            | Self::InvalidRoom(_)
            | Self::BadParameter { .. }
            | Self::BadRequest(_)
            | Self::NotWebSocket(_)
            | Self::BadBody(_) => StatusCode::BAD_REQUEST,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UpgradeRequired => StatusCode::UPGRADE_REQUIRED,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Unavailable(EngineError::Refused(_)) => StatusCode::BAD_REQUEST,
            Self::Unavailable(EngineError::StorageFull)
            | Self::Moderation(ModerationError::Engine(EngineError::StorageFull)) => {
                StatusCode::INSUFFICIENT_STORAGE
            }
            Self::Unavailable(EngineError::Unencodable(_))
            | Self::Moderation(ModerationError::Engine(EngineError::Unencodable(_))) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Auth(AuthError::Missing | AuthError::Invalid(_)) => StatusCode::UNAUTHORIZED,
            Self::Auth(AuthError::BadName(_) | AuthError::Unnamed(_)) => StatusCode::BAD_REQUEST,
            Self::Auth(_) | Self::OriginNotAllowed => StatusCode::FORBIDDEN,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Refused(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::HookRefused { status: 401, .. } => StatusCode::UNAUTHORIZED,
            Self::HookRefused { .. } | Self::PublishRefused(_) => StatusCode::FORBIDDEN,
            Self::SignInUnavailable(_) | Self::PublishHookFailed(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::ChangeRefused(
                crate::change::ChangeRefused::NotFound { .. }
                | crate::change::ChangeRefused::Gone { .. },
            ) => StatusCode::NOT_FOUND,
            Self::ChangeRefused(_) => StatusCode::FORBIDDEN,
            Self::Barred(_) | Self::NotModerator => StatusCode::FORBIDDEN,
            Self::Moderation(ModerationError::Invalid(_)) => StatusCode::BAD_REQUEST,
            Self::Moderation(ModerationError::TooMany) => StatusCode::CONFLICT,
            Self::Moderation(ModerationError::Engine(EngineError::Refused(_))) => {
                StatusCode::BAD_REQUEST
            }
            Self::Moderation(ModerationError::Engine(_)) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::RateLimited { retry_after_ms } = self {
            let body =
                serde_json::json!({ "error": "rate limited", "retry_after_ms": retry_after_ms });
            return (
                self.status(),
                [
                    (header::CONTENT_TYPE, "application/json".to_owned()),
                    (
                        header::RETRY_AFTER,
                        retry_after_ms.div_ceil(1000).to_string(),
                    ),
                ],
                body.to_string(),
            )
                .into_response();
        }
        if let Self::Barred(barred) = &self {
            return (
                self.status(),
                [(header::CONTENT_TYPE, "application/json")],
                barred.body().to_string(),
            )
                .into_response();
        }
        let mut response = (
            self.status(),
            [(header::CONTENT_TYPE, "application/json")],
            error_body(&self.to_string()),
        )
            .into_response();
        if self.status() == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Self::UpgradeRequired = self {
            // RFC 9110 section 15.5.22: the protocol to upgrade to.
            let headers = response.headers_mut();
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        response
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::QueryRejection) -> Self {
        Self::BadRequest(rejection.body_text())
    }
}

impl From<axum::extract::rejection::PathRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::PathRejection) -> Self {
        Self::BadRequest(rejection.body_text())
    }
}
