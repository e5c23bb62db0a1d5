//! Who is calling: the identity behind an HTTP request or a WebSocket handshake, from a token in
//! `Authorization: Bearer` (any request) or `?token=` (WebSocket, where browsers cannot set
//! headers), or, with auth off, a name the client chose.

use axum::http::{HeaderMap, header};

use super::{ApiError, AppState};
use crate::auth::Identity;

/// The caller's identity; with auth on, a missing or bad token is 401.
pub fn identify(
    state: &AppState,
    headers: &HeaderMap,
    query_token: Option<&str>,
    name: Option<&str>,
) -> Result<Identity, ApiError> {
    let token = bearer(headers).or(query_token);
    Ok(state.auth.identify(token, name)?)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}
