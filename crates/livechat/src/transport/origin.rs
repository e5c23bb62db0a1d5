//! Which web pages may talk to the server. A browser names the page's origin in `Origin` on every
//! WebSocket handshake and cross-site request. The rule is Django Channels'
//! `AllowedHostsOriginValidator`, which the replaced service's pages were written against:
//!
//! - an origin whose **host** is the host the request was addressed to (`Host`, or a trusted
//!   proxy's `X-Forwarded-Host`) is served, at any scheme and port: a page served by the app on
//!   `http://example.com:8000` talks to livechat on `ws://example.com:8003`;
//! - an origin on a loopback name (`localhost`, `127.0.0.1`, `[::1]`) is served when the request
//!   itself came from loopback, as Django allows them in development;
//! - `LIVECHAT_ALLOWED_ORIGINS` adds origins (`https://chat.example.com`, `https://*.example.com`,
//!   `*`), and `self` in it keeps only the server's exact own origin (scheme, host and port) and
//!   the listed ones, without the two rules above;
//! - everything else is refused with 403 before any handler (and before any upgrade).
//!
//! Requests without `Origin` (wscat, servers, existing clients) are not browsers acting for
//! another site, and pass. `Origin: null` (sandboxed frames, `file://` pages) is refused unless
//! `*` is set. Origins served across sites (any but the exact own origin) get CORS headers, and
//! their preflight requests are answered.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::client_ip::peer;
use super::{ApiError, AppState};

/// The rule, read from `LIVECHAT_ALLOWED_ORIGINS`.
#[derive(Debug, Default)]
pub struct OriginPolicy {
    any: bool,
    /// `self`: only the exact own origin and the listed ones.
    strict: bool,
    exact: Vec<Origin>,
    /// From entries such as `https://*.example.com`: the scheme, `.example.com`, the port.
    subdomains: Vec<Origin>,
}

/// How a request's `Origin` stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The page is the server's own (same scheme, host and port): no CORS needed.
    SameOrigin,
    /// Another origin the rule allows: served, with CORS headers.
    CrossSite,
    Refused,
}

/// Where a request was addressed and where it came from, as the rule needs them.
#[derive(Debug, Clone)]
pub struct RequestSite {
    /// `scheme://host[:port]` the browser reached the server at, if it said (`Host`).
    pub own: Option<String>,
    /// The client (after trusted proxies) is on loopback.
    pub from_loopback: bool,
}

impl OriginPolicy {
    /// Reads `self`, `*`, `https://chat.example.com` and `https://*.example.com` entries.
    pub fn new(entries: &[String]) -> Result<Self, String> {
        let mut policy = Self::default();
        for entry in entries.iter().map(|e| e.trim().trim_end_matches('/')) {
            match entry {
                "" => continue,
                "*" => policy.any = true,
                "self" => policy.strict = true,
                _ => {
                    let expected = || {
                        format!(
                            "allowed origin `{entry}` must look like https://host, \
                             https://host:port or https://*.host (or be `self` or `*`)"
                        )
                    };
                    let origin = Origin::parse(entry).ok_or_else(expected)?;
                    match origin.host.strip_prefix('*') {
                        Some(suffix) if suffix.starts_with('.') && suffix.len() > 1 => {
                            policy.subdomains.push(Origin {
                                host: suffix.to_owned(),
                                ..origin
                            })
                        }
                        Some(_) => return Err(expected()),
                        None => policy.exact.push(origin),
                    }
                }
            }
        }
        Ok(policy)
    }

    /// Whether a request from a page at `origin` (the header's text) is served.
    pub fn verdict(&self, origin: &str, site: &RequestSite) -> Verdict {
        let own = site.own.as_deref().and_then(Origin::parse);
        let Some(origin) = Origin::parse(origin) else {
            // `null`, or not an origin at all.
            return if self.any {
                Verdict::CrossSite
            } else {
                Verdict::Refused
            };
        };
        if own.as_ref() == Some(&origin) {
            return Verdict::SameOrigin;
        }
        let listed = self.any
            || self.exact.contains(&origin)
            || self.subdomains.iter().any(|pattern| {
                pattern.scheme == origin.scheme
                    && pattern.port == origin.port
                    && origin.host.ends_with(pattern.host.as_str())
                    && origin.host.len() > pattern.host.len()
            });
        let same_host = || {
            own.as_ref()
                .is_some_and(|own| same_host(&own.host, &origin.host))
        };
        let loopback = || site.from_loopback && is_loopback_name(&origin.host);
        if listed || (!self.strict && (same_host() || loopback())) {
            Verdict::CrossSite
        } else {
            Verdict::Refused
        }
    }
}

/// An origin normalised for comparison: lowercase, the host without a trailing dot, no port
/// when it is the scheme's default (a browser never writes `:443` for https).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl Origin {
    /// `scheme://host[:port]`, the host a name, an IPv4 address or a bracketed IPv6 one.
    fn parse(text: &str) -> Option<Self> {
        let text = text.trim().to_ascii_lowercase();
        let (scheme, rest) = text.split_once("://")?;
        if scheme.is_empty()
            || !scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        {
            return None;
        }
        let (host, port) = match rest.strip_prefix('[') {
            Some(v6) => {
                let (address, after) = v6.split_once(']')?;
                address.parse::<Ipv6Addr>().ok()?;
                let port = match after {
                    "" => None,
                    _ => Some(after.strip_prefix(':')?),
                };
                (format!("[{address}]"), port)
            }
            None => match rest.rsplit_once(':') {
                Some((host, port)) => (host.to_owned(), Some(port)),
                None => (rest.to_owned(), None),
            },
        };
        let host = host.strip_suffix('.').unwrap_or(&host).to_owned();
        let valid_host = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._*[]:".contains(&b));
        if !valid_host {
            return None;
        }
        let port = match port {
            None => None,
            Some(port) => Some(port.parse::<u16>().ok()?),
        };
        let default_port = match scheme {
            "http" | "ws" => Some(80),
            "https" | "wss" => Some(443),
            _ => None,
        };
        Some(Self {
            scheme: scheme.to_owned(),
            port: port.filter(|port| Some(*port) != default_port),
            host,
        })
    }
}

/// The same host, whatever the port: names compared as written (lowercase, no trailing dot),
/// addresses as addresses (`[::1]` and `[0:0::1]` are one).
fn same_host(a: &str, b: &str) -> bool {
    match (address(a), address(b)) {
        (Some(a), Some(b)) => a == b,
        _ => a == b,
    }
}

fn address(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|host| host.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

/// `localhost` (and its subdomains, as Django's `.localhost`), `127.0.0.1` and `[::1]`.
fn is_loopback_name(host: &str) -> bool {
    host == "localhost"
        || host.ends_with(".localhost")
        || address(host).is_some_and(|address| {
            address == IpAddr::from(Ipv4Addr::LOCALHOST)
                || address == IpAddr::from(Ipv6Addr::LOCALHOST)
        })
}

/// Middleware on every route: refuses foreign browser origins, answers CORS for allowed ones.
pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(origin) = request.headers().get(header::ORIGIN).cloned() else {
        return next.run(request).await;
    };
    let (parts, body) = request.into_parts();
    let site = peer(&parts).map(|peer| {
        let proxies = &state.trusted_proxies;
        RequestSite {
            own: proxies.public_origin(peer.ip(), &parts.headers, state.tls),
            from_loopback: proxies.client_ip(peer.ip(), &parts.headers).is_loopback(),
        }
    });
    let request = Request::from_parts(parts, body);
    let verdict = match (origin.to_str(), site) {
        (Ok(text), Ok(site)) => state.origins.verdict(text, &site),
        _ => Verdict::Refused,
    };
    match verdict {
        Verdict::SameOrigin => return next.run(request).await,
        Verdict::Refused => return ApiError::OriginNotAllowed.into_response(),
        Verdict::CrossSite => {}
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
            HeaderValue::from_static("GET, POST, PATCH, DELETE, OPTIONS"),
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

    fn policy(entries: &[&str]) -> OriginPolicy {
        OriginPolicy::new(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>()).unwrap()
    }

    /// A request addressed to `own`, from a remote client (or from loopback).
    fn site(own: &str, from_loopback: bool) -> RequestSite {
        RequestSite {
            own: Some(own.to_owned()),
            from_loopback,
        }
    }

    use Verdict::{CrossSite, Refused, SameOrigin};

    #[test]
    fn matches_listed_origins() {
        let policy = policy(&["https://chat.example.com", "https://*.example.org"]);
        let remote = site("http://livechat.internal:8003", false);
        assert_eq!(
            policy.verdict("https://chat.example.com", &remote),
            CrossSite
        );
        assert_eq!(policy.verdict("http://chat.example.com", &remote), Refused);
        assert_eq!(policy.verdict("https://a.example.org", &remote), CrossSite);
        assert_eq!(policy.verdict("https://example.org", &remote), Refused);
        assert_eq!(policy.verdict("https://evil-example.org", &remote), Refused);
        assert_eq!(policy.verdict("null", &remote), Refused);
        assert!(OriginPolicy::new(&["example.com".into()]).is_err());
        assert!(OriginPolicy::new(&["https://*example.com".into()]).is_err());
        assert_eq!(
            OriginPolicy::default().verdict("https://chat.example.com", &remote),
            Refused
        );
    }

    #[test]
    fn the_host_the_request_was_addressed_to_at_any_port_and_scheme() {
        let policy = OriginPolicy::default();
        let own = site("http://example.com:8003", false);
        assert_eq!(policy.verdict("http://example.com:8003", &own), SameOrigin);
        assert_eq!(policy.verdict("http://example.com:8000", &own), CrossSite);
        assert_eq!(policy.verdict("https://example.com", &own), CrossSite);
        assert_eq!(policy.verdict("https://EXAMPLE.com.", &own), CrossSite);
        assert_eq!(policy.verdict("https://www.example.com", &own), Refused);
        assert_eq!(policy.verdict("https://example.com.evil", &own), Refused);
        assert_eq!(policy.verdict("https://evil.example", &own), Refused);
        // The Host header with a trailing dot, or in capitals.
        let dotted = site("http://Example.COM.:8003", false);
        assert_eq!(policy.verdict("https://example.com", &dotted), CrossSite);
        // Default ports are no ports.
        let tls = site("https://example.com:443", false);
        assert_eq!(policy.verdict("https://example.com", &tls), SameOrigin);
        assert_eq!(policy.verdict("https://example.com:443", &tls), SameOrigin);
        assert_eq!(policy.verdict("https://example.com:8443", &tls), CrossSite);
        // No Host: nothing to match.
        let unknown = RequestSite {
            own: None,
            from_loopback: false,
        };
        assert_eq!(policy.verdict("http://example.com", &unknown), Refused);
    }

    #[test]
    fn ipv6_literals_compare_as_addresses() {
        let policy = OriginPolicy::default();
        let own = site("http://[2001:db8::1]:8003", false);
        assert_eq!(policy.verdict("http://[2001:db8::1]:8000", &own), CrossSite);
        assert_eq!(policy.verdict("http://[2001:DB8:0::1]", &own), CrossSite);
        assert_eq!(policy.verdict("http://[2001:db8::2]:8000", &own), Refused);
        assert_eq!(policy.verdict("http://[nonsense]:8000", &own), Refused);
    }

    #[test]
    fn loopback_pages_on_loopback_requests() {
        let policy = OriginPolicy::default();
        let local = site("http://localhost:8003", true);
        for origin in [
            "http://localhost:8000",
            "http://127.0.0.1:8000",
            "http://[::1]:8000",
            "http://app.localhost:3000",
        ] {
            assert_eq!(policy.verdict(origin, &local), CrossSite, "{origin}");
        }
        // Another loopback address is not a loopback name.
        assert_eq!(policy.verdict("http://127.0.0.2:8000", &local), Refused);
        // The same pages, but the request came from elsewhere.
        let remote = site("http://chat.example.com", false);
        assert_eq!(policy.verdict("http://localhost:8000", &remote), Refused);
        assert_eq!(policy.verdict("http://127.0.0.1:8000", &remote), Refused);
    }

    #[test]
    fn null_is_refused_unless_anything_goes() {
        let local = site("http://localhost:8003", true);
        assert_eq!(OriginPolicy::default().verdict("null", &local), Refused);
        assert_eq!(policy(&["self"]).verdict("null", &local), Refused);
        assert_eq!(policy(&["*"]).verdict("null", &local), CrossSite);
        assert_eq!(
            policy(&["*"]).verdict("https://any.example", &local),
            CrossSite
        );
    }

    #[test]
    fn self_keeps_the_exact_own_origin_and_the_listed_ones() {
        let strict = policy(&["self", "https://app.example.com:443"]);
        let own = site("http://localhost:8003", true);
        assert_eq!(strict.verdict("http://localhost:8003", &own), SameOrigin);
        assert_eq!(strict.verdict("http://localhost:8000", &own), Refused);
        assert_eq!(strict.verdict("http://127.0.0.1:8000", &own), Refused);
        // Listed with its default port, matched without it.
        assert_eq!(strict.verdict("https://app.example.com", &own), CrossSite);
    }

    #[test]
    fn listed_entries_are_normalised() {
        let listed = policy(&["HTTPS://App.Example.com.:443/", "http://*.example.net:8080"]);
        let remote = site("http://livechat.internal", false);
        assert_eq!(
            listed.verdict("https://app.example.com", &remote),
            CrossSite
        );
        assert_eq!(
            listed.verdict("http://a.example.net:8080", &remote),
            CrossSite
        );
        assert_eq!(listed.verdict("http://a.example.net", &remote), Refused);
    }
}
