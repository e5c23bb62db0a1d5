//! Which web pages may talk to the server. A browser names the page's origin in `Origin` on every
//! WebSocket handshake and cross-site request; such a request is served when the origin is the
//! server's own or matches `LIVECHAT_ALLOWED_ORIGINS`, and refused with 403 before any handler
//! (and before any upgrade) otherwise. Requests without `Origin` (wscat, servers, existing
//! clients) are not browsers acting for another site, and pass. Allowed foreign origins get CORS
//! headers, and their preflight requests are answered.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::client_ip::peer;
use super::{ApiError, AppState};

/// The origins allowed besides the server's own.
#[derive(Debug, Default)]
pub struct OriginPolicy {
    any: bool,
    /// Lowercase `scheme://host[:port]`.
    exact: Vec<String>,
    /// `(scheme://, .suffix)` from entries such as `https://*.example.com`.
    subdomains: Vec<(String, String)>,
}

impl OriginPolicy {
    /// Reads `*`, `https://chat.example.com` and `https://*.example.com` entries.
    pub fn new(entries: &[String]) -> Result<Self, String> {
        let mut policy = Self::default();
        for entry in entries
            .iter()
            .map(|e| e.trim().trim_end_matches('/').to_ascii_lowercase())
        {
            if entry.is_empty() {
                continue;
            }
            if entry == "*" {
                policy.any = true;
                continue;
            }
            let Some((scheme, host)) = entry.split_once("://") else {
                return Err(format!(
                    "allowed origin `{entry}` must look like https://host or https://*.host"
                ));
            };
            match host.strip_prefix('*') {
                Some(suffix) if suffix.starts_with('.') => policy
                    .subdomains
                    .push((format!("{scheme}://"), suffix.to_owned())),
                Some(_) => return Err(format!("allowed origin `{entry}`: use *.host")),
                None => policy.exact.push(entry.clone()),
            }
        }
        Ok(policy)
    }

    fn allows(&self, origin: &str) -> bool {
        self.any
            || self.exact.iter().any(|allowed| allowed == origin)
            || self.subdomains.iter().any(|(scheme, suffix)| {
                origin.strip_prefix(scheme.as_str()).is_some_and(|host| {
                    host.ends_with(suffix.as_str()) && host.len() > suffix.len()
                })
            })
    }
}

/// Middleware on every route: refuses foreign browser origins, answers CORS for allowed ones.
pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(origin) = request.headers().get(header::ORIGIN).cloned() else {
        return next.run(request).await;
    };
    let lowered = origin.to_str().unwrap_or("").to_ascii_lowercase();
    let (parts, body) = request.into_parts();
    let own = peer(&parts).ok().and_then(|peer| {
        state
            .trusted_proxies
            .public_origin(peer.ip(), &parts.headers, state.tls)
    });
    let request = Request::from_parts(parts, body);
    if own.is_some_and(|own| own == lowered) {
        return next.run(request).await;
    }
    if !state.origins.allows(&lowered) {
        return ApiError::OriginNotAllowed.into_response();
    }
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        let mut response = StatusCode::NO_CONTENT.into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type"),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        response
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.append(header::VARY, HeaderValue::from_static("origin"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_listed_origins() {
        let entries = [
            "https://chat.example.com".into(),
            "https://*.example.org".into(),
        ];
        let policy = OriginPolicy::new(&entries).unwrap();
        assert!(policy.allows("https://chat.example.com"));
        assert!(!policy.allows("http://chat.example.com"));
        assert!(policy.allows("https://a.example.org"));
        assert!(!policy.allows("https://example.org"));
        assert!(!policy.allows("https://evil-example.org"));
        assert!(!policy.allows("null"));
        assert!(OriginPolicy::new(&["*".into()]).unwrap().allows("null"));
        assert!(OriginPolicy::new(&["example.com".into()]).is_err());
        assert!(
            !OriginPolicy::new(&[])
                .unwrap()
                .allows("https://chat.example.com")
        );
    }
}
