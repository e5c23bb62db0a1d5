//! Who is calling: the identity behind an HTTP request or a WebSocket handshake, from a token in
//! `Authorization: Bearer` or `?token=` (browsers cannot set headers on a WebSocket), the server
//! key, the app's connect hook (for callers with neither, when it is set), or, with auth off, a
//! name the client chose.

use std::collections::BTreeMap;
use std::net::IpAddr;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Uri, header};

use super::client_ip::ClientIp;
use super::{ApiError, AppState};
use crate::auth::Identity;
use crate::hooks::{ConnectRequest, Transport, Verdict};
use crate::room::RoomName;

/// `?token=`, on routes with no other parameter.
#[derive(Debug, serde::Deserialize)]
pub struct TokenParam {
    pub token: Option<String>,
}

/// `?token=`, or with auth off `?name=`: who the caller is on routes that act as a user.
#[derive(Debug, serde::Deserialize)]
pub struct Who {
    pub token: Option<String>,
    pub name: Option<String>,
}

/// A request's caller, as an extractor: what identifies it.
pub struct Caller {
    headers: HeaderMap,
    uri: Uri,
    client_ip: IpAddr,
}

/// A caller identified.
pub struct Identified {
    pub identity: Identity,
    /// The connect hook's call, when the hook vouched for the caller: a connection asks it
    /// again before the answer runs out.
    pub hook_request: Option<ConnectRequest>,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let ClientIp(client_ip) = ClientIp::from_request_parts(parts, state).await?;
        Ok(Self {
            headers: parts.headers.clone(),
            uri: parts.uri.clone(),
            client_ip,
        })
    }
}

impl Caller {
    pub fn client_ip(&self) -> IpAddr {
        self.client_ip
    }

    /// The caller's identity. A token (auth on) or the server key is checked here; a caller
    /// with neither is the connect hook's to name when it is set (401/403 as the app says, 503
    /// when it cannot be asked); else, with auth off, it may name itself.
    pub async fn identify(
        &self,
        state: &AppState,
        query_token: Option<&str>,
        name: Option<&str>,
        room: Option<&RoomName>,
        transport: Transport,
    ) -> Result<Identified, ApiError> {
        let token = bearer(&self.headers).or(query_token);
        let hook = match &state.hooks.connect {
            Some(hook) if !state.auth.checks_locally(token) => hook,
            _ => {
                return Ok(Identified {
                    identity: state.auth.identify(token, name)?,
                    hook_request: None,
                });
            }
        };
        let request = ConnectRequest {
            room: room.cloned(),
            client_ip: self.client_ip,
            transport,
            path: self.uri.path().to_owned(),
            query: query_without_token(&self.uri),
            headers: hook.forwarded_headers(&self.headers),
        };
        match &*hook
            .ask(request.clone())
            .await
            .map_err(ApiError::SignInUnavailable)?
        {
            Verdict::Admitted(admission) => Ok(Identified {
                identity: admission.identity(),
                hook_request: Some(request),
            }),
            Verdict::Refused { status, reason } => Err(ApiError::HookRefused {
                status: *status,
                reason: reason.clone(),
            }),
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The query's parameters, but `token` (a credential is not the app's business here).
fn query_without_token(uri: &Uri) -> BTreeMap<String, String> {
    let Some(query) = uri.query() else {
        return BTreeMap::new();
    };
    reqwest::Url::parse(&format!("http://query/?{query}"))
        .map(|url| {
            url.query_pairs()
                .filter(|(name, _)| name != "token")
                .map(|(name, value)| (name.into_owned(), value.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}
