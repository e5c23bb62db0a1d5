//! Who is on the other end: the client's IP address and the origin it reached the server at.
//! Directly, that is the socket's peer and the `Host` header. Behind a proxy listed in
//! `LIVECHAT_TRUSTED_PROXIES`, it is what the proxy says: the client from `X-Forwarded-For` (the
//! rightmost address that is not itself a trusted proxy), the scheme from `X-Forwarded-Proto`, the
//! host from `X-Forwarded-Host`. Those headers are ignored from anyone else, who could forge them.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};

use super::{ApiError, AppState};

/// Address ranges whose forwarding headers are believed.
#[derive(Debug, Default, Clone)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TrustedProxies {
    /// Reads `127.0.0.1/32,10.0.0.0/8,::1` (a bare address is one host).
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let mut ranges = Vec::new();
        for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            let invalid =
                || format!("`{entry}` is not an address or a CIDR range such as 10.0.0.0/8");
            let (address, bits) = match entry.split_once('/') {
                Some((address, bits)) => (address, Some(bits)),
                None => (entry, None),
            };
            let address: IpAddr = address.parse().map_err(|_| invalid())?;
            let max = if address.is_ipv4() { 32 } else { 128 };
            let bits = match bits {
                Some(bits) => bits
                    .parse::<u8>()
                    .ok()
                    .filter(|b| *b <= max)
                    .ok_or_else(invalid)?,
                None => max,
            };
            ranges.push((address, bits));
        }
        Ok(Self(ranges))
    }

    pub fn contains(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        self.0
            .iter()
            .any(|(network, bits)| in_range(address, *network, *bits))
    }

    /// The client's address: the peer, or behind trusted proxies the forwarded client.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.contains(peer) {
            return canonical(peer);
        }
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        let mut client = canonical(peer);
        for hop in forwarded.iter().rev() {
            let Ok(address) = hop.parse::<IpAddr>() else {
                break;
            };
            client = canonical(address);
            if !self.contains(client) {
                break;
            }
        }
        client
    }

    /// `scheme://host` as the browser reached the server (`tls`: it serves https itself).
    pub fn public_origin(&self, peer: IpAddr, headers: &HeaderMap, tls: bool) -> Option<String> {
        let forwarded = |name: &str| {
            self.contains(peer)
                .then(|| headers.get(name)?.to_str().ok())
                .flatten()
                .and_then(|value| value.split(',').next())
                .map(str::trim)
        };
        let scheme = forwarded("x-forwarded-proto").unwrap_or(if tls { "https" } else { "http" });
        let host =
            forwarded("x-forwarded-host").or_else(|| headers.get(header::HOST)?.to_str().ok())?;
        Some(format!("{scheme}://{host}").to_ascii_lowercase())
    }
}

/// An IPv4 address mapped into IPv6 (`::ffff:a.b.c.d`) is that IPv4 address.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

fn in_range(address: IpAddr, network: IpAddr, bits: u8) -> bool {
    match (address, network) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// The client's IP address, as an extractor.
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let peer = peer(parts)?;
        Ok(Self(
            state.trusted_proxies.client_ip(peer.ip(), &parts.headers),
        ))
    }
}

/// The socket's peer address, which the accept loop puts on every request.
pub fn peer(parts: &Parts) -> Result<SocketAddr, ApiError> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| *peer)
        .ok_or_else(|| ApiError::BadRequest("no peer address".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn believes_forwarding_headers_from_trusted_proxies_only() {
        let trusted = TrustedProxies::parse(&["10.0.0.0/8".into(), "127.0.0.1".into()]).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let forwarded = headers(&[("x-forwarded-for", "203.0.113.9, 10.1.2.3")]);
        assert_eq!(
            trusted.client_ip(ip("10.0.0.1"), &forwarded),
            ip("203.0.113.9")
        );
        assert_eq!(
            trusted.client_ip(ip("198.51.100.1"), &forwarded),
            ip("198.51.100.1")
        );
        let spoofed = headers(&[("x-forwarded-for", "1.2.3.4, 203.0.113.9")]);
        assert_eq!(
            trusted.client_ip(ip("127.0.0.1"), &spoofed),
            ip("203.0.113.9")
        );
        assert_eq!(
            trusted.client_ip(ip("::ffff:127.0.0.2"), &spoofed),
            ip("127.0.0.2")
        );
        let proxied = headers(&[
            ("host", "10.0.0.5:8003"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "chat.example.com"),
        ]);
        let origin = trusted.public_origin(ip("10.0.0.1"), &proxied, false);
        assert_eq!(origin.as_deref(), Some("https://chat.example.com"));
        let direct = trusted.public_origin(ip("192.0.2.1"), &proxied, false);
        assert_eq!(direct.as_deref(), Some("http://10.0.0.5:8003"));
        let tls = trusted.public_origin(ip("192.0.2.1"), &proxied, true);
        assert_eq!(tls.as_deref(), Some("https://10.0.0.5:8003"));
        assert!(TrustedProxies::parse(&["10.0.0.0/33".into()]).is_err());
        assert!(TrustedProxies::parse(&["nope".into()]).is_err());
    }
}
