//! WebSocket connections: `GET /ws/chat/{room}/` joins a room; `{"message": X}` frames publish.
//!
//! One task per connection, polling everything it waits on from one place: frames the hub queued
//! (taken all at once and written in one vectored write; the hub also says when to close), the
//! client's frames (published without waiting for each to be stored, up to `MAX_IN_FLIGHT` at
//! once), and the answers of the store. An idle connection is this task and its socket, nothing
//! more: what it needs only to close is allocated when it closes.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::upgrade::{Socket, Upgrade};
use super::{ApiError, AppState};
use crate::engine::Receipt;
use crate::hub::Subscription;
use crate::message::{BadPublish, Draft, Publish, error_frame};
use crate::outbound::Closed;
use crate::room::RoomName;
use crate::websocket::{CloseCode, Incoming, ProtocolError, ReadError, frame};

/// Publishes of one connection that may wait for the store at once; past it, reading pauses.
const MAX_IN_FLIGHT: usize = 256;
/// Error replies a connection may owe its client before it counts as not reading them.
const MAX_PENDING_REPLIES: usize = 64;
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
    room: Result<Path<String>, PathRejection>,
    options: Result<Query<ConnectOptions>, QueryRejection>,
    upgrade: Result<Upgrade, ApiError>,
) -> Response {
    let parsed = (|| {
        let Path(room) = room?;
        let Query(options) = options?;
        Ok::<_, ApiError>((RoomName::parse(&room)?, options))
    })();
    let (room, options) = match parsed {
        Ok(parsed) => parsed,
        Err(refused) => return refused.into_response(),
    };
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(refused) => return refused.into_response(),
    };
    let wants_meta = matches!(options.meta.as_deref(), Some("1" | "true" | "yes"));
    // Join before answering the handshake: once the client is told it is connected, it misses
    // nothing published to the room (frames queue up until the socket is ready).
    let subscription = state.hub.join(&room, wants_meta);
    if let Err(error) = state.engine.room_ready(&room).await {
        return ApiError::from(error).into_response();
    }
    upgrade.on_upgrade(state.max_message_bytes, move |socket| {
        let connections = state.connections.clone();
        connections.track_future(async move {
            let connection = Connection {
                socket,
                state,
                room,
                subscription,
                receipts: VecDeque::new(),
            };
            connection.run().await;
        })
    })
}

struct Connection {
    socket: Socket,
    state: AppState,
    room: RoomName,
    subscription: Subscription,
    /// Publishes waiting to be stored, oldest first; a failed one owes its client an error frame.
    receipts: VecDeque<Receipt>,
}

/// Why a connection ended.
enum End {
    /// The socket failed or the client hung up without a close frame.
    ClientGone,
    /// The client sent a close frame: answer it, then close.
    ClientClosed(Option<CloseCode>),
    /// The client broke the protocol (1002), sent bad UTF-8 (1007) or too large a message
    /// (1009): close with the error's code.
    ProtocolError(ProtocolError),
    /// We close: shutdown, or a slow consumer.
    Close((CloseCode, &'static str)),
}

impl Connection {
    async fn run(mut self) {
        let end = poll_fn(|cx| self.poll_turn(cx)).await;
        let Connection {
            socket,
            room,
            subscription,
            ..
        } = self;
        // Leave the room first: nothing more is queued for a closing connection.
        drop(subscription);
        // Boxed: an open connection's task does not carry the closing steps' state or timer.
        let _ = Box::pin(tokio::time::timeout(
            CLOSE_TIMEOUT,
            close(socket, room, end),
        ))
        .await;
    }

    /// Does all the work that is ready; pending when none is left, ready when the connection ends.
    /// Reads and writes are independent: a client that stops reading keeps being read (and is
    /// evicted once its queue fills), and one that stops sending keeps being written to.
    fn poll_turn(&mut self, cx: &mut Context<'_>) -> Poll<End> {
        loop {
            let mut progress = false;
            // Frames are taken only once the last ones are written, so a stuck client's queue
            // fills up; the queue is still polled, to learn of an eviction.
            match self
                .subscription
                .outbound
                .poll_take(cx, self.socket.empty_outbox())
            {
                Poll::Ready(Err(Closed::SlowConsumer)) => {
                    return Poll::Ready(End::Close(SLOW_CONSUMER));
                }
                Poll::Ready(Err(Closed::ShuttingDown)) => {
                    return Poll::Ready(End::Close(GOING_AWAY));
                }
                Poll::Ready(Ok(())) => progress = true,
                Poll::Pending => {}
            }
            while let Some(receipt) = self.receipts.front_mut() {
                let Poll::Ready(answer) = Pin::new(receipt).poll(cx) else {
                    break;
                };
                self.receipts.pop_front();
                if let Err(error) = answer {
                    self.socket.queue(error_frame(&error.to_string()));
                }
                progress = true;
            }
            if let Poll::Ready(Err(_)) = self.socket.poll_write(cx) {
                return Poll::Ready(End::ClientGone);
            }
            if self.receipts.len() < MAX_IN_FLIGHT {
                match self.socket.poll_next(cx) {
                    Poll::Pending => {}
                    Poll::Ready(Ok(None) | Err(ReadError::Io(_))) => {
                        return Poll::Ready(End::ClientGone);
                    }
                    Poll::Ready(Err(ReadError::Protocol(error))) => {
                        return Poll::Ready(End::ProtocolError(error));
                    }
                    Poll::Ready(Ok(Some(incoming))) => {
                        progress = true;
                        if let Some(end) = self.take(incoming) {
                            return Poll::Ready(end);
                        }
                    }
                }
            }
            if !progress {
                return Poll::Pending;
            }
        }
    }

    /// Acts on one message or control frame from the client.
    fn take(&mut self, incoming: Incoming) -> Option<End> {
        let reply = match incoming {
            Incoming::Text(text) => match Publish::parse(&text) {
                Ok(Publish {
                    message: Some(message),
                    ..
                }) => {
                    let room = self.room.clone();
                    let receipt = self.state.engine.publish(Draft {
                        room,
                        message,
                        user: None,
                    });
                    self.receipts.push_back(receipt);
                    return None;
                }
                Ok(_) => error_frame(&BadPublish::MissingMessage.to_string()),
                Err(bad) => error_frame(&bad.to_string()),
            },
            Incoming::Binary => error_frame(
                "binary frames are not supported: send JSON text such as {\"message\": \"hi\"}",
            ),
            Incoming::Ping(payload) => frame::pong(&payload),
            Incoming::Pong => return None,
            Incoming::Close(code) => return Some(End::ClientClosed(code)),
        };
        // A client that sends bad frames and does not read the answers.
        if self.socket.queued() >= self.subscription.outbound.capacity() + MAX_PENDING_REPLIES {
            return Some(End::Close(SLOW_CONSUMER));
        }
        self.socket.queue(reply);
        None
    }
}

/// The closing handshake, by who ended the connection.
async fn close(mut socket: Socket, room: RoomName, end: End) {
    match end {
        End::ClientGone => {}
        End::ClientClosed(code) => {
            socket.queue(frame::close(code.unwrap_or(CloseCode::NORMAL), ""));
            let _ = socket.finish().await;
        }
        End::ProtocolError(error) => {
            tracing::debug!(%room, %error, "closing connection");
            socket.queue(frame::close(error.code, error.reason));
            // Read what the client still sends until it hangs up: closing a socket with unread
            // data makes the kernel send a reset, and the close frame would be lost.
            if socket.finish().await.is_ok() {
                let _ = poll_fn(|cx| socket.poll_discard(cx)).await;
            }
        }
        End::Close((code, reason)) => {
            tracing::debug!(%room, reason, "closing connection");
            socket.queue(frame::close(code, reason));
            if poll_fn(|cx| socket.poll_write(cx)).await.is_ok() {
                socket.await_close().await;
                let _ = socket.finish().await;
            }
        }
    }
}
