//! WebSocket connections: `GET /ws/chat/{room}/` joins a room; `{"message": X}` frames publish.
//!
//! One task per connection. It reads the client's frames and publishes them without waiting for
//! each to be stored (up to `MAX_IN_FLIGHT` at once), and writes the frames the hub queued for it,
//! as many as are waiting in one flush.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum_tws::{CloseCode, Limits, Message, WebSocket, WebSocketError, WebSocketUpgrade};
use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;

use super::{ApiError, AppState};
use crate::engine::Receipt;
use crate::hub::Subscription;
use crate::message::{Draft, Publish, error_body};
use crate::room::RoomName;

/// Publishes of one connection that may wait for the store at once; past it, reading pauses.
const MAX_IN_FLIGHT: usize = 256;
/// Frames written in one go before the socket is flushed.
const MAX_WRITE_BATCH: usize = 64;
/// How long a closing connection waits for its close frame to go out and be answered.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Close code and reason for a client whose outbound queue filled up (it does not read fast enough).
pub const SLOW_CONSUMER: (CloseCode, &str) = (
    CloseCode::POLICY_VIOLATION,
    "slow consumer: outbound queue full",
);
const GOING_AWAY: (CloseCode, &str) = (CloseCode::GOING_AWAY, "server shutting down");

#[derive(Debug, Deserialize)]
pub struct ConnectOptions {
    /// `?meta=1`: frames carry `id`, `room` and `ts` beside `message`.
    meta: Option<String>,
}

pub async fn connect(
    State(state): State<AppState>,
    Path(room): Path<String>,
    Query(options): Query<ConnectOptions>,
    upgrade: Result<WebSocketUpgrade, WebSocketError>,
) -> Response {
    let room = match RoomName::parse(&room) {
        Ok(room) => room,
        Err(invalid) => return ApiError::from(invalid).into_response(),
    };
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(error) => return ApiError::NotWebSocket(error.to_string()).into_response(),
    };
    let wants_meta = matches!(options.meta.as_deref(), Some("1" | "true" | "yes"));
    let limits = Limits::default().max_payload_len(Some(state.max_message_bytes));
    upgrade.limits(limits).on_upgrade(move |socket| {
        let connections = state.connections.clone();
        connections.track_future(async move {
            let subscription = state.hub.join(&room, wants_meta);
            Connection {
                socket,
                state,
                room,
                subscription,
            }
            .run()
            .await;
        })
    })
}

struct Connection {
    socket: WebSocket,
    state: AppState,
    room: RoomName,
    subscription: Subscription,
}

/// Why a connection ended.
enum End {
    /// The client closed, or the socket failed.
    ClientGone,
    /// The client broke the protocol (bad UTF-8, too large); the library queued the close frame.
    ProtocolError,
    Close((CloseCode, &'static str)),
}

impl Connection {
    async fn run(mut self) {
        let shutdown = self.state.shutdown.clone();
        let evicted = self.subscription.evicted.clone();
        let mut receipts: FuturesUnordered<Receipt> = FuturesUnordered::new();
        let end = loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break End::Close(GOING_AWAY),
                _ = evicted.notified() => break End::Close(SLOW_CONSUMER),
                Some(receipt) = receipts.next(), if !receipts.is_empty() => {
                    if let Err(error) = receipt
                        && self.send_error(&error.to_string()).await.is_err()
                    {
                        break End::ClientGone;
                    }
                }
                frame = self.subscription.frames.recv() => {
                    let Some(frame) = frame else { break End::Close(SLOW_CONSUMER) };
                    // A write blocks while the client does not read: stay stoppable meanwhile.
                    tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => break End::Close(GOING_AWAY),
                        _ = evicted.notified() => break End::Close(SLOW_CONSUMER),
                        written = self.write_queued(frame) => if written.is_err() {
                            break End::ClientGone;
                        },
                    }
                }
                incoming = self.socket.next(), if receipts.len() < MAX_IN_FLIGHT => {
                    match incoming {
                        None => break End::ClientGone,
                        Some(Err(WebSocketError::Internal(axum_tws::Error::Io(_)))) => {
                            break End::ClientGone
                        }
                        Some(Err(_)) => break End::ProtocolError,
                        Some(Ok(message)) => {
                            if let Some(receipt) = self.handle(message).await {
                                receipts.push(receipt);
                            }
                        }
                    }
                }
            }
        };
        self.finish(end).await;
    }

    /// Publishes a text frame, or answers a bad one with an error frame.
    async fn handle(&mut self, message: Message) -> Option<Receipt> {
        let reply = if let Some(text) = message.as_text() {
            match Publish::parse(text.as_bytes()) {
                Ok(Publish {
                    message: Some(message),
                    ..
                }) => {
                    let draft = Draft {
                        room: self.room.clone(),
                        message,
                    };
                    return Some(self.state.engine.publish(draft));
                }
                Ok(_) => crate::message::BadPublish::MissingMessage.to_string(),
                Err(bad) => bad.to_string(),
            }
        } else if message.is_binary() {
            "binary frames are not supported: send JSON text such as {\"message\": \"hi\"}".into()
        } else {
            // Ping, pong and close are answered by the protocol layer.
            return None;
        };
        // A failed send shows up as the end of the stream on the next read.
        let _ = self.send_error(&reply).await;
        None
    }

    async fn send_error(&mut self, reason: &str) -> Result<(), WebSocketError> {
        self.socket.send(Message::text(error_body(reason))).await
    }

    /// Writes `first` and whatever else is queued (up to a batch), then flushes once.
    async fn write_queued(&mut self, first: Bytes) -> Result<(), WebSocketError> {
        self.socket.feed(Message::text(first)).await?;
        for _ in 1..MAX_WRITE_BATCH {
            match self.subscription.frames.try_recv() {
                Ok(frame) => self.socket.feed(Message::text(frame)).await?,
                Err(_) => break,
            }
        }
        self.socket.flush().await
    }

    async fn finish(mut self, end: End) {
        // Leave the room first: nothing more is queued for a closing connection.
        drop(self.subscription);
        let closing = async {
            match end {
                End::ClientGone => return,
                End::ProtocolError => {}
                End::Close((code, reason)) => {
                    tracing::debug!(room = %self.room, reason, "closing connection");
                    if self
                        .socket
                        .send(Message::close(Some(code), reason))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
            // Flush our close frame and wait for the client's answer to it.
            while let Some(Ok(_)) = self.socket.next().await {}
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, closing).await;
    }
}
