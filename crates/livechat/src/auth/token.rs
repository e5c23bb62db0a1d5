//! Issuing tokens (`livechat token ...`), for operators and tests: HS256, signed with the
//! configured secret.

use jsonwebtoken::{EncodingKey, Header};
use serde::Serialize;

use crate::store::now_ms;

/// What a token says: who, until when, which rooms, whether it may publish or moderate.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub sub: String,
    pub name: Option<String>,
    /// `None`: every room.
    pub rooms: Option<Vec<String>>,
    pub publish: bool,
    /// May moderate (the `moderate` claim): change and delete any message, ban and mute.
    pub moderate: bool,
    /// Lifetime from now; negative for an already expired token (tests).
    pub ttl_seconds: i64,
    /// `iss` and `aud`, written when the server expects them (`LIVECHAT_JWT_ISSUER`,
    /// `LIVECHAT_JWT_AUDIENCE`).
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

impl TokenRequest {
    /// A token for `sub`, every room, for an hour.
    pub fn for_user(sub: &str) -> Self {
        Self {
            sub: sub.to_owned(),
            name: None,
            rooms: None,
            publish: true,
            moderate: false,
            ttl_seconds: 3600,
            issuer: None,
            audience: None,
        }
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    exp: i64,
    iat: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rooms: Option<&'a [String]>,
    /// Only written when false: absent means may publish.
    #[serde(skip_serializing_if = "Option::is_none")]
    publish: Option<bool>,
    /// Only written when true.
    #[serde(skip_serializing_if = "Option::is_none")]
    moderate: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// Signs a token with `secret` (HS256).
pub fn issue(secret: &str, request: &TokenRequest) -> Result<String, jsonwebtoken::errors::Error> {
    let now = (now_ms() / 1000) as i64;
    let claims = Claims {
        sub: &request.sub,
        exp: now.saturating_add(request.ttl_seconds),
        iat: now,
        name: request.name.as_deref(),
        rooms: request.rooms.as_deref(),
        publish: (!request.publish).then_some(false),
        moderate: request.moderate.then_some(true),
        iss: request.issuer.as_deref(),
        aud: request.audience.as_deref(),
    };
    jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
}
