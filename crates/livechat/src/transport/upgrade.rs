//! The WebSocket opening handshake (RFC 6455 section 4.2) as an axum extractor, handing the
//! upgraded connection to `crate::websocket`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::Bytes;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_util::either::Either;

use super::ApiError;
use super::shared_tcp::SharedTcp;
use crate::websocket::WebSocket;
use crate::websocket::deflate::{self, Agreement};

/// An accepted WebSocket connection.
pub type Socket = WebSocket<Stream>;

/// What a WebSocket runs on: the TCP stream as accepted, taken back from hyper (most
/// connections: it saves hyper's boxed wrapper, bytes every idle connection would pay) and shared
/// with the connection's outbound queue, which writes into it directly; or hyper's upgraded
/// connection as it is (TLS: frames go through the queue and the task).
pub type Stream = Either<SharedTcp, Box<TokioIo<Upgraded>>>;

/// The stream, and the bytes hyper read past the handshake (the client's first frames).
fn take_stream(upgraded: Upgraded) -> std::io::Result<(Stream, Bytes)> {
    Ok(match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => (
            Either::Left(SharedTcp::from_tokio(parts.io.into_inner())?),
            parts.read_buf,
        ),
        Err(upgraded) => (
            Either::Right(Box::new(TokioIo::new(upgraded))),
            Bytes::new(),
        ),
    })
}

/// A valid WebSocket handshake request, ready to be answered with 101.
pub struct Upgrade {
    key: HeaderValue,
    on_upgrade: OnUpgrade,
    /// The client's permessage-deflate offer this server can honour, if it made one.
    deflate_offer: Option<Agreement>,
}

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let refuse = |reason: &str| Err(ApiError::NotWebSocket(reason.to_owned()));
        if parts.method != Method::GET {
            return refuse("the method must be GET");
        }
        // No upgrade asked at all: a plain GET (a browser probing why its WebSocket failed).
        if !header_has_token(&parts.headers, header::UPGRADE, "websocket") {
            return Err(ApiError::UpgradeRequired);
        }
        if !header_has_token(&parts.headers, header::CONNECTION, "upgrade") {
            return refuse("`Connection: Upgrade` is missing");
        }
        if parts.headers.get(header::SEC_WEBSOCKET_VERSION) != Some(&HeaderValue::from_static("13"))
        {
            return refuse("`Sec-WebSocket-Version: 13` is missing");
        }
        let Some(key) = parts.headers.get(header::SEC_WEBSOCKET_KEY).cloned() else {
            return refuse("`Sec-WebSocket-Key` is missing");
        };
        let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
            return refuse("this connection cannot be upgraded");
        };
        let offers = parts.headers.get_all(header::SEC_WEBSOCKET_EXTENSIONS);
        let deflate_offer = deflate::negotiate(offers.iter().filter_map(|v| v.to_str().ok()));
        Ok(Self {
            key,
            on_upgrade,
            deflate_offer,
        })
    }
}

impl Upgrade {
    /// What permessage-deflate would be agreed, if the client offered something this server
    /// can honour.
    pub fn deflate_offer(&self) -> Option<Agreement> {
        self.deflate_offer
    }

    /// The 101 Switching Protocols answer, and the socket it leads to once hyper hands the
    /// connection over; `max_message`: the largest message the client may send; `deflate`:
    /// permessage-deflate as agreed (from `deflate_offer`), or `None` for none.
    pub fn accept(
        self,
        max_message: usize,
        deflate: Option<Agreement>,
    ) -> (Response, PendingSocket) {
        let mut response = (
            StatusCode::SWITCHING_PROTOCOLS,
            [
                (header::CONNECTION, HeaderValue::from_static("upgrade")),
                (header::UPGRADE, HeaderValue::from_static("websocket")),
                (
                    header::SEC_WEBSOCKET_ACCEPT,
                    accept_key(self.key.as_bytes()),
                ),
            ],
        )
            .into_response();
        if let Some(agreement) = deflate
            && let Ok(value) = HeaderValue::from_str(&agreement.response())
        {
            response
                .headers_mut()
                .insert(header::SEC_WEBSOCKET_EXTENSIONS, value);
        }
        let pending = PendingSocket {
            on_upgrade: self.on_upgrade,
            max_message,
            deflate: deflate.is_some(),
        };
        (response, pending)
    }
}

/// A WebSocket whose 101 answer is on its way. Awaited by the connection's own task, so that
/// what the connection holds is kept once in that task, not also in a task that waits for it.
pub struct PendingSocket {
    on_upgrade: OnUpgrade,
    max_message: usize,
    deflate: bool,
}

impl PendingSocket {
    /// The socket, once hyper has sent the 101 and handed the connection over.
    pub fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<Socket>> {
        let upgraded =
            ready!(Pin::new(&mut self.on_upgrade).poll(cx)).map_err(std::io::Error::other)?;
        let (stream, read) = take_stream(upgraded)?;
        let mut socket = WebSocket::new(stream, self.max_message);
        socket.already_read(&read);
        if self.deflate {
            socket.accept_compressed();
        }
        Poll::Ready(Ok(socket))
    }
}

/// `Sec-WebSocket-Accept`: base64(SHA-1(key + the RFC's GUID)).
fn accept_key(key: &[u8]) -> HeaderValue {
    let mut sha1 = sha1_smol::Sha1::new();
    sha1.update(key);
    sha1.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let accept = base64::engine::general_purpose::STANDARD.encode(sha1.digest().bytes());
    HeaderValue::from_str(&accept).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Whether a comma-separated header holds `token`, ignoring case.
fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    #[test]
    fn accept_key_matches_the_rfc_example() {
        let accept = super::accept_key(b"dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }
}
