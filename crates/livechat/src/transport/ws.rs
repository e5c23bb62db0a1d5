//! WebSocket connections: `GET /ws/chat/{room}/` joins a room; `{"message": X}` frames publish.
//!
//! One task per connection. It reads the client's frames and publishes them without waiting for
//! each to be stored (up to `MAX_IN_FLIGHT` at once), and writes the frames the hub queued for it,
//! as many as are waiting in one flush.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{FuturesUnordered, SplitSink};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_websockets::{CloseCode, Error as WebSocketError, Limits, Message};

use super::upgrade::{Socket, Upgrade};
use super::{ApiError, AppState};
use crate::engine::Receipt;
use crate::hub::Subscription;
use crate::message::{BadPublish, Draft, Publish, error_body};
use crate::room::RoomName;

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
    let limits = Limits::default().max_payload_len(Some(state.max_message_bytes));
    upgrade.on_upgrade(limits, move |socket| {
        let connections = state.connections.clone();
        connections.track_future(async move {
            let connection = Connection {
                socket,
                state,
                room,
                subscription,
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
    /// Reads and writes independently: a client that stops reading keeps being read (and is
    /// evicted once its queue fills), and a client that stops sending keeps being written to.
    async fn run(self) {
        let Connection {
            socket,
            state,
            room,
            subscription,
        } = self;
        let (mut sink, mut stream) = socket.split();
        let shutdown = state.shutdown.clone();
        // Frames just taken off the subscription's queue, on their way to the outbox.
        let mut taken = VecDeque::new();
        let mut receipts: FuturesUnordered<Receipt> = FuturesUnordered::new();
        // Frames waiting for room in the sink: error replies, and hub frames taken off the queue.
        let mut outbox: VecDeque<Message> = VecDeque::new();
        let mut unflushed = false;
        let end = loop {
            let take_frames = outbox.is_empty();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break End::Close(GOING_AWAY),
                // Always polled, to learn of an eviction even while a write is stuck; frames are
                // taken only when the outbox is empty, so a stuck client's queue fills up.
                queued = poll_fn(|cx| subscription.outbound.poll_take(cx, take_frames, &mut taken)) => {
                    if queued.is_err() {
                        break End::Close(SLOW_CONSUMER);
                    }
                    outbox.extend(taken.drain(..).map(Message::text));
                }
                Some(receipt) = receipts.next(), if !receipts.is_empty() => {
                    if let Err(error) = receipt {
                        outbox.push_back(error_frame(&error.to_string()));
                    }
                }
                written = poll_fn(|cx| write_outbox(&mut sink, &mut outbox, &mut unflushed, cx)),
                    if unflushed || !outbox.is_empty() =>
                {
                    if written.is_err() {
                        break End::ClientGone;
                    }
                }
                incoming = stream.next(), if receipts.len() < MAX_IN_FLIGHT => match incoming {
                    None | Some(Err(WebSocketError::Io(_))) => {
                        break End::ClientGone;
                    }
                    Some(Err(_)) => break End::ProtocolError,
                    Some(Ok(message)) => match read_frame(&room, message) {
                        Incoming::Publish(draft) => receipts.push(state.engine.publish(draft)),
                        Incoming::Reply(reply)
                            if outbox.len() < subscription.outbound.capacity() + MAX_PENDING_REPLIES =>
                        {
                            outbox.push_back(reply);
                        }
                        // It sends bad frames and does not read the answers.
                        Incoming::Reply(_) => break End::Close(SLOW_CONSUMER),
                        Incoming::Nothing => {}
                    },
                },
            }
        };
        // Leave the room first: nothing more is queued for a closing connection.
        drop(subscription);
        let closing = async {
            match end {
                End::ClientGone => {}
                End::ProtocolError => {
                    // The library queued the close frame (1007, 1009, 1002): send it, then read
                    // and discard the rest of what the client sends until it hangs up.
                    let _ = sink.flush().await;
                    if let Ok(socket) = stream.reunite(sink) {
                        linger(socket.into_inner()).await;
                    }
                }
                End::Close((code, reason)) => {
                    tracing::debug!(%room, reason, "closing connection");
                    if sink.send(Message::close(Some(code), reason)).await.is_ok() {
                        // Wait for the client's answer to our close frame.
                        while let Some(Ok(_)) = stream.next().await {}
                    }
                }
            }
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, closing).await;
    }
}

/// Reads and drops what the client still sends, until it closes, then closes our side.
async fn linger(mut io: hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>) {
    // On the heap: an array here would sit in every connection's task, used or not.
    let mut sink = vec![0u8; 8192];
    while matches!(io.read(&mut sink).await, Ok(read) if read > 0) {}
    let _ = io.shutdown().await;
}

/// What a client's frame asks for.
enum Incoming {
    Publish(Draft),
    Reply(Message),
    /// Ping, pong and close: the protocol layer answers them.
    Nothing,
}

fn read_frame(room: &RoomName, message: Message) -> Incoming {
    if let Some(text) = message.as_text() {
        match Publish::parse(text.as_bytes()) {
            Ok(Publish {
                message: Some(message),
                ..
            }) => Incoming::Publish(Draft {
                room: room.clone(),
                message,
            }),
            Ok(_) => Incoming::Reply(error_frame(&BadPublish::MissingMessage.to_string())),
            Err(bad) => Incoming::Reply(error_frame(&bad.to_string())),
        }
    } else if message.is_binary() {
        Incoming::Reply(error_frame(
            "binary frames are not supported: send JSON text such as {\"message\": \"hi\"}",
        ))
    } else {
        Incoming::Nothing
    }
}

fn error_frame(reason: &str) -> Message {
    Message::text(error_body(reason))
}

/// Hands the outbox to the sink as it makes room, then flushes once; ready when all is written.
/// Holds no frame itself, so dropping it (when another branch wins) loses nothing.
fn write_outbox(
    sink: &mut SplitSink<Socket, Message>,
    outbox: &mut VecDeque<Message>,
    unflushed: &mut bool,
    cx: &mut Context<'_>,
) -> Poll<Result<(), WebSocketError>> {
    while !outbox.is_empty() {
        ready!(sink.poll_ready_unpin(cx))?;
        if let Some(frame) = outbox.pop_front() {
            sink.start_send_unpin(frame)?;
            *unflushed = true;
        }
    }
    if *unflushed {
        ready!(sink.poll_flush_unpin(cx))?;
        *unflushed = false;
    }
    Poll::Ready(Ok(()))
}
