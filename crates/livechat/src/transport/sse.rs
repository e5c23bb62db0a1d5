//! Server-Sent Events, for networks that break WebSockets: `GET /sse/chat/{room}/` follows a
//! room as `text/event-stream`, with the same switches, checks and bounds as a WebSocket
//! (`transport::entry`) and the same frames, one event each (`data:` the frame's JSON). A stored
//! message's event carries `id:` its id, so the browser's own `Last-Event-ID` resumes without
//! a gap (taken as `since` when the URL has none). Sending goes over the HTTP routes.
//!
//! The stream is a member of the hub like a WebSocket: one task takes what its outbound queue
//! holds and writes it into the response body through a small channel; a client that does not
//! read fills the channel, then the queue, and is closed as a slow consumer. The keepalive
//! sweep's pings become comments (`: ping`), written within the ping interval of silence. When
//! the server ends a stream (shutdown, slow consumer, an expired token, a moderator) it first
//! sends `event: close` with `{"code", "reason"}`, the WebSocket close it stands for.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use super::admission::Permit;
use super::caller::Caller;
use super::entry::{self, ConnectOptions, Entry};
use super::ws::{GOING_AWAY, SLOW_CONSUMER, TOKEN_EXPIRED};
use super::{ApiError, AppState};
use crate::hooks::Transport;
use crate::hub::{JoinAs, Subscription};
use crate::metrics::{CloseReason, Metrics};
use crate::outbound::Closed;
use crate::outgoing::{Carried, OutgoingFrame};

/// Chunks written but not yet taken by the client's connection.
const CHANNEL_CHUNKS: usize = 16;
/// How long the browser waits before it reconnects a stream that ended (ms).
const RETRY_MS: u32 = 1000;

/// The event stream of a room.
#[utoipa::path(
    get,
    path = "/sse/chat/{room}/", tag = "chat", operation_id = "sse_connect",
    params(super::openapi::RoomPath, super::openapi::ConnectQuery),
    responses(
        (status = 200, description = "The room's frames as events (docs/asyncapi.yaml), `id:` a stored message's id", content_type = "text/event-stream"),
        (status = 400, description = "An invalid room, name or query", body = super::openapi::ErrorBody),
        (status = 401, description = "Auth required: no valid token", body = super::openapi::ErrorBody),
        (status = 403, description = "Room not allowed, banned, or a foreign browser origin", body = super::openapi::ErrorBody),
        (status = 503, description = "Connection caps reached, or Redis unavailable", body = super::openapi::ErrorBody),
    )
)]
pub async fn connect(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    room: Result<Path<String>, PathRejection>,
    options: Result<Query<ConnectOptions>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let last_seen = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .filter(|value| !value.is_empty());
    let entry = entry::enter(
        &state,
        caller,
        room,
        options,
        last_seen,
        Transport::EventStream,
    )
    .await;
    let Entry {
        room,
        switches,
        identified,
        resume,
        permit,
    } = match entry {
        Ok(entry) => entry,
        Err(refused) => return refused.into_response(),
    };
    let identity = identified.identity;
    let reader = identity
        .user
        .as_deref()
        .and_then(crate::presence::user_key)
        .map(|key| key.to_string());
    // Message frames always carry their ids (the events' ids); what else a member with meta
    // receives is left out for one without.
    let join = JoinAs {
        user: identity.user.clone(),
        meta: switches.meta,
        meta_frames: true,
        resuming: resume.is_some(),
        presence: switches.presence,
        receipts: switches.receipts,
        deflate_window: None,
    };
    let subscription = state.hub.join(&room, join);
    subscription
        .outbound
        .liveness
        .expire_at(identity.closes_at());
    let first = match entry::first_frames(
        &state,
        &subscription,
        switches,
        resume.as_ref(),
        true,
        reader,
    )
    .await
    {
        Ok(first) => first,
        Err(refused) => return refused.into_response(),
    };
    let (chunks, body) = mpsc::channel::<Bytes>(CHANNEL_CHUNKS);
    let stream = Stream {
        subscription,
        chunks,
        meta: switches.meta,
        metrics: state.metrics.clone(),
        _permit: permit,
    };
    tokio::spawn(state.connections.track_future(stream.run(first)));
    let body = futures_util::stream::unfold(body, |mut body| async move {
        let chunk = body.recv().await?;
        Some((Ok::<_, std::convert::Infallible>(chunk), body))
    });
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx buffers responses by default: this one must not wait in a buffer.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// One stream's task: the member's queue, into the response body.
struct Stream {
    subscription: Subscription,
    chunks: mpsc::Sender<Bytes>,
    /// The client asked for metadata.
    meta: bool,
    metrics: Arc<Metrics>,
    /// Its place under the connection caps, given back when it ends.
    _permit: Permit,
}

impl Stream {
    /// Counted among the connections while it runs, and why it ended.
    async fn run(self, first: Vec<Bytes>) {
        self.metrics.connections.increment(1.0);
        let ended = self.follow(first).await;
        self.metrics.connections.decrement(1.0);
        self.metrics.closed(ended);
    }

    async fn follow(&self, first: Vec<Bytes>) -> CloseReason {
        let mut opening = BytesMut::new();
        opening.put_slice(format!("retry: {RETRY_MS}\n\n").as_bytes());
        for frame in &first {
            self.write_frame(frame, &mut opening);
        }
        if self.chunks.send(opening.freeze()).await.is_err() {
            return CloseReason::ClientGone;
        }
        let mut taken = VecDeque::new();
        loop {
            let outbound = self.subscription.outbound.clone();
            let turn = tokio::select! {
                turn = poll_fn(|cx| outbound.poll_take(cx, Some(&mut taken))) => turn,
                () = self.chunks.closed() => return CloseReason::ClientGone,
            };
            let mut chunk = BytesMut::new();
            match turn {
                Ok(()) => {
                    for frame in taken.drain(..) {
                        self.write_frame(&frame, &mut chunk);
                    }
                }
                Err(closed) => {
                    let (code, reason) = self.close_for(closed);
                    let close = serde_json::json!({ "code": code, "reason": reason });
                    chunk.put_slice(b"event: close\n");
                    write_data(close.to_string().as_bytes(), &mut chunk);
                    let _ = self.chunks.send(chunk.freeze()).await;
                    return match closed {
                        Closed::SlowConsumer => CloseReason::SlowConsumer,
                        Closed::ShuttingDown => CloseReason::Shutdown,
                        Closed::Unresponsive => CloseReason::Timeout,
                        Closed::WriteFailed => CloseReason::ClientGone,
                        Closed::TokenExpired => CloseReason::Auth,
                        Closed::Kicked | Closed::KickedForGood => CloseReason::Moderated,
                    };
                }
            }
            if !chunk.is_empty() && self.chunks.send(chunk.freeze()).await.is_err() {
                return CloseReason::ClientGone;
            }
        }
    }

    /// Writes a queued frame as the client is to see it: an event, a keepalive comment, or
    /// nothing.
    fn write_frame(&self, frame: &Bytes, out: &mut BytesMut) {
        match OutgoingFrame::carried(frame) {
            Carried::Text(payload) => self.write_event(&payload, out),
            Carried::Ping => {
                out.put_slice(b": ping\n\n");
                // Written: as much as a stream can hear from its client (it sends nothing).
                self.subscription.outbound.liveness.heard();
            }
            Carried::Other => {}
        }
    }

    fn write_event(&self, payload: &[u8], out: &mut BytesMut) {
        let Ok(shape) = serde_json::from_slice::<Shape<'_>>(payload) else {
            return write_data(payload, out);
        };
        let message = match (&shape.id, shape.message, &shape.event) {
            (Some(id), Some(message), None) => {
                out.put_slice(format!("id: {id}\n").as_bytes());
                Some(message)
            }
            _ => None,
        };
        if self.meta {
            return write_data(payload, out);
        }
        match (message, shape.event.as_deref()) {
            // The original service's shape, as a WebSocket client without meta gets it.
            (Some(message), _) => {
                let plain = serde_json::json!({ "message": message });
                write_data(plain.to_string().as_bytes(), out);
            }
            // Changes to stored messages are for members with meta (a resume replays them).
            (None, Some("edited" | "deleted" | "reaction" | "reactions")) => {}
            (None, _) => write_data(payload, out),
        }
    }

    fn close_for(&self, closed: Closed) -> (u16, Cow<'static, str>) {
        let (code, reason) = match closed {
            Closed::SlowConsumer => SLOW_CONSUMER,
            Closed::ShuttingDown | Closed::Unresponsive | Closed::WriteFailed => GOING_AWAY,
            Closed::TokenExpired => TOKEN_EXPIRED,
            Closed::Kicked | Closed::KickedForGood => {
                let (code, default) = match closed {
                    Closed::KickedForGood => (4004, "disconnected, do not reconnect"),
                    _ => (4003, "disconnected"),
                };
                let reason = self.subscription.kick_reason();
                let reason: Arc<str> = reason.unwrap_or_else(|| Arc::from(default));
                return (code, Cow::Owned(reason.to_string()));
            }
        };
        (code.0, Cow::Borrowed(reason))
    }
}

/// What a frame's JSON says of itself.
#[derive(Deserialize)]
struct Shape<'a> {
    id: Option<u64>,
    #[serde(borrow)]
    message: Option<&'a RawValue>,
    #[serde(borrow)]
    event: Option<Cow<'a, str>>,
}

/// `data:` lines of one event: a JSON text keeps its meaning when its own line breaks (white
/// space a client may have sent) start new `data:` lines, which the browser joins with `\n`.
fn write_data(payload: &[u8], out: &mut BytesMut) {
    for line in payload.split(|byte| *byte == b'\n' || *byte == b'\r') {
        out.put_slice(b"data: ");
        out.put_slice(line);
        out.put_u8(b'\n');
    }
    out.put_u8(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_text_with_line_breaks_is_one_event_of_several_data_lines() {
        let mut out = BytesMut::new();
        write_data(b"{\"message\": {\r\n\"a\": 1\n}}", &mut out);
        assert_eq!(
            &out[..],
            b"data: {\"message\": {\ndata: \ndata: \"a\": 1\ndata: }}\n\n"
        );
    }
}
