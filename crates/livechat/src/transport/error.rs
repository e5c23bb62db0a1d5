//! Errors answered over HTTP: a status code and a body `{"error": "..."}`.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::engine::EngineError;
use crate::message::{BadPublish, error_body};
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
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status(),
            [(header::CONTENT_TYPE, "application/json")],
            error_body(&self.to_string()),
        )
            .into_response()
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
