//! WebSocket connections: `GET /ws/chat/{room}/` joins a room; `{"message": X}` frames publish.
//!
//! One task per connection, polling everything it waits on from one place: frames the hub queued
//! (taken all at once and written in one vectored write; the hub, and the keepalive sweep, also
//! say when to close), the client's frames (what each asks for is the `session`'s call; publishes
//! go out without waiting for each to be stored, up to `MAX_IN_FLIGHT` / `MAX_IN_FLIGHT_BYTES`
//! at once), and the answers of the store. What a connection needs only to close is allocated
//! when it closes. The task is a future written by hand (`Task`), not an `async fn`: written out
//! it holds the connection and its socket once (an `async fn` kept room for each of its steps:
//! 720 bytes against about 370). An idle plain-TCP connection gives up its task: it parks
//! (`ParkedConnection`, `super::parking`) until its client sends or its queue needs it.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::net::TcpStream;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio_util::either::Either;
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::admission::Permit;
use super::caller::{Caller, Identified};
use super::entry::{self, ConnectOptions, Entry};
use super::hooked::{HookNews, Hooked, Renewal};
use super::parking::{Parked, Refused};
use super::pending::Waiting;
use super::reads;
use super::session::{Action, RATE_ABUSE, Session};
use super::shared_tcp::SharedTcp;
use super::upgrade::{PendingSocket, Socket, Upgrade};
use super::{ApiError, AppState};
use crate::hooks::{Judgement, Transport};
use crate::hub::{JoinAs, Subscription};
use crate::message::{Draft, ErrorReply, Request};
use crate::metrics::{CloseReason, PublishError};
use crate::outbound::{Closed, Outbound};
use crate::outgoing::OutgoingFrame;
use crate::room::RoomName;
use crate::throttle::Throttle;
use crate::websocket::frame::Decoder;
use crate::websocket::{CloseCode, Incoming, ProtocolError, ReadError};

/// Lines about connections the server closed: at most 20 a second; a storm is summed up by the
/// count held back, in the next line let through.
static CLOSE_LINES: Throttle = Throttle::new(Duration::from_secs(1), 20);

/// Publishes of one connection that may wait for the store at once; past either bound, reading
/// pauses until the store answers.
const MAX_IN_FLIGHT: usize = 256;
const MAX_IN_FLIGHT_BYTES: usize = 4 * 1024 * 1024;
/// Bytes of replies (errors, pongs) a connection may owe its client beyond its outbound bound
/// before it counts as not reading them.
const REPLY_BUDGET_BYTES: usize = 64 * 1024;

/// Close code and reason for a client whose outbound queue filled up (it does not read fast enough).
pub const SLOW_CONSUMER: (CloseCode, &str) = (
    CloseCode::POLICY_VIOLATION,
    "slow consumer: outbound queue full",
);
pub const GOING_AWAY: (CloseCode, &str) = (CloseCode::GOING_AWAY, "server shutting down");
/// A client that did not answer a ping: it is most likely gone, so nobody waits for its answer.
const PING_TIMEOUT: (CloseCode, &str) = (CloseCode::GOING_AWAY, "ping timeout");
pub const TOKEN_EXPIRED: (CloseCode, &str) = (CloseCode(4001), "token expired");

/// The WebSocket handshake; after the 101 the protocol is in docs/asyncapi.yaml.
#[utoipa::path(
    get,
    path = "/ws/chat/{room}/", tag = "chat",
    params(super::openapi::RoomPath, super::openapi::ConnectQuery),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, description = "Not a WebSocket handshake, or an invalid room, name or query", body = super::openapi::ErrorBody),
        (status = 401, description = "Auth required: no valid token", body = super::openapi::ErrorBody),
        (status = 403, description = "Room not allowed, or a foreign browser origin", body = super::openapi::ErrorBody),
        (status = 426, description = "A plain GET (no upgrade asked) that would be let in: clients whose WebSocket failed before opening ask this way why", body = super::openapi::ErrorBody),
        (status = 503, description = "Connection caps reached, or Redis unavailable", body = super::openapi::ErrorBody),
    )
)]
pub async fn connect(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    room: Result<Path<String>, PathRejection>,
    options: Result<Query<ConnectOptions>, QueryRejection>,
    upgrade: Result<Upgrade, ApiError>,
) -> Response {
    let entry = entry::enter(&state, caller, room, options, None, Transport::WebSocket).await;
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
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(refused) => return refused.into_response(),
    };
    let Identified {
        identity,
        hook_request,
    } = identified;
    let deflate = upgrade.deflate_offer().filter(|_| state.compression);
    let join = JoinAs {
        user: identity.user.clone(),
        meta: switches.meta,
        meta_frames: switches.meta,
        resuming: resume.is_some(),
        presence: switches.presence,
        receipts: switches.receipts,
        deflate_window: deflate.map(|agreement| agreement.server_window_bits),
    };
    let meta = switches.meta;
    // Join before answering the handshake: once the client is told it is connected, it misses
    // nothing published to the room (frames queue up until the socket is ready).
    let subscription = state.hub.join(&room, join);
    subscription
        .outbound
        .liveness
        .expire_at(identity.closes_at());
    let limiter = state
        .rate_limit
        .as_ref()
        .map(|(limit, _)| limit.for_connection());
    let session = Session::new(&identity, limiter);
    let publish_hook = state.hooks.publish.clone().filter(|_| !identity.is_server);
    let hooked = Hooked::new(
        publish_hook,
        state.hooks.connect.as_ref(),
        &identity,
        hook_request,
    );
    let reader = session.user_key();
    let first = match entry::first_frames(
        &state,
        &subscription,
        switches,
        resume.as_ref(),
        meta,
        reader,
    )
    .await
    {
        Ok(first) => first,
        Err(refused) => return refused.into_response(),
    };
    let (response, pending) = upgrade.accept(state.max_message_bytes, deflate);
    let connections = state.connections.clone();
    let connection = Connection {
        state,
        subscription,
        session,
        receipts: VecDeque::new(),
        in_flight_bytes: 0,
        hooked,
        permit,
        opened: Instant::now(),
        meta,
    };
    tokio::spawn(connections.track_future(Task::Upgrading(connection, pending, first)));
    response
}

// A running connection's task (with its socket, queue and hub member) is in a task cell, 128-byte
// aligned, of 512 bytes while it stays under about 440; a parked one (most idle connections)
// is `ParkedConnection` in one allocation instead: the idle goal is 1.0 KiB per connection in
// all, at 18,000. A change that grows them (or the connection they hold) fails to compile here.
const _: () = assert!(std::mem::size_of::<Task>() <= 336);
const _: () = assert!(std::mem::size_of::<ParkedConnection>() <= 248);
const _: () = assert!(std::mem::size_of::<Connection>() <= 184);

/// A connection's task: where the connection is in its life.
enum Task {
    /// The 101 answer is on its way; the frames go out before anything else.
    Upgrading(Connection, PendingSocket, Vec<Bytes>),
    Open(Connection, Socket),
    /// The closing handshake (boxed: an open connection does not carry its state or timer).
    Closing(Pin<Box<dyn Future<Output = ()> + Send>>),
    Done,
}

impl Future for Task {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let phase = self.get_mut();
        loop {
            match phase {
                Task::Upgrading(_, pending, _) => {
                    let upgraded = ready!(pending.poll_ready(cx));
                    let Task::Upgrading(connection, _, first) =
                        std::mem::replace(phase, Task::Done)
                    else {
                        return Poll::Ready(());
                    };
                    match upgraded {
                        Ok(socket) => *phase = connection.open(socket, first),
                        Err(error) => {
                            tracing::debug!(%error, "WebSocket upgrade failed");
                            return Poll::Ready(());
                        }
                    }
                }
                Task::Open(connection, socket) => {
                    let end = match connection.poll_turn(socket, cx) {
                        Poll::Ready(end) => end,
                        Poll::Pending if connection.may_park(socket) => {
                            if ParkedConnection::park(phase) {
                                return Poll::Ready(());
                            }
                            // Back with a new registration: polled again, so that it waits on it.
                            continue;
                        }
                        Poll::Pending => return Poll::Pending,
                    };
                    if let Task::Open(connection, socket) = std::mem::replace(phase, Task::Done) {
                        *phase = Task::Closing(connection.close(socket, end));
                    }
                }
                Task::Closing(closing) => {
                    ready!(closing.as_mut().poll(cx));
                    *phase = Task::Done;
                }
                Task::Done => return Poll::Ready(()),
            }
        }
    }
}

/// What a connection holds besides its socket.
struct Connection {
    state: AppState,
    subscription: Subscription,
    session: Session,
    /// Publishes waiting to be stored, oldest first; a failed one owes its client an error frame.
    receipts: VecDeque<Waiting>,
    in_flight_bytes: usize,
    /// Publishes waiting for the publish hook, and the connect hook asked again (none
    /// without hooks).
    hooked: Option<Box<Hooked>>,
    /// The connection's place under the connection caps, given back when it ends.
    permit: Permit,
    opened: Instant,
    /// Frames with metadata (`?meta=1`).
    meta: bool,
}

/// A parked connection (`super::parking`): what its task held, less its buffers (empty) and
/// its registration with the runtime's poller.
struct ParkedConnection {
    connection: Connection,
    stream: Arc<TcpStream>,
    decoder: Decoder,
    /// Counted with the running connections, so that shutdown waits for it.
    _tracked: TaskTrackerToken,
}

impl ParkedConnection {
    /// Parks the idle connection the task runs (`Connection::may_park`): true when it did (the
    /// task is done). When it cannot park after all (its queue has news for it, or the server
    /// stops), the task keeps it, to poll again.
    fn park(phase: &mut Task) -> bool {
        let Task::Open(mut connection, socket) = std::mem::replace(phase, Task::Done) else {
            return false;
        };
        let (io, decoder) = socket.into_parts();
        let shared = match io {
            Either::Left(shared) => shared,
            Either::Right(tls) => {
                *phase = Task::Open(connection, Socket::from_parts(Either::Right(tls), decoder));
                return false;
            }
        };
        let parking = connection.state.parking.clone();
        // Parked, it keeps no spare room (the queue it used while busy).
        connection.receipts = VecDeque::new();
        let parked = Box::new(Self {
            _tracked: connection.state.connections.token(),
            connection,
            stream: shared.unregister(),
            decoder,
        });
        let Err((parked, refused)) = parking.park(parked) else {
            return true;
        };
        let outbound = &parked.connection.subscription.outbound;
        outbound.stay(refused == Refused::Unavailable);
        let ParkedConnection {
            connection,
            stream,
            decoder,
            ..
        } = *parked;
        let socket = Socket::from_parts(Either::Left(SharedTcp::Bare(stream)), decoder);
        *phase = Task::Open(connection, socket);
        false
    }
}

impl Parked for ParkedConnection {
    fn outbound(&self) -> &Outbound {
        &self.connection.subscription.outbound
    }

    fn stream(&self) -> &TcpStream {
        &self.stream
    }

    fn resume(self: Box<Self>, runtime: &tokio::runtime::Handle) {
        let ParkedConnection {
            connection,
            stream,
            decoder,
            _tracked,
        } = *self;
        let socket = Socket::from_parts(Either::Left(SharedTcp::Bare(stream)), decoder);
        let connections = connection.state.connections.clone();
        runtime.spawn(connections.track_future(Task::Open(connection, socket)));
    }
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
    /// We close: shutdown, a slow consumer, an expired token, rate abuse.
    Close((CloseCode, &'static str)),
    /// We close a client that stopped answering: the close frame goes out if it can, without
    /// waiting for the client's answer.
    Abandon((CloseCode, &'static str)),
    /// A moderator closed it (its user disconnected or banned), with their reason.
    Kicked { code: CloseCode, reason: Arc<str> },
}

impl Connection {
    /// The socket is ready: `first` is what the client is sent before anything else (who is
    /// here, what it missed).
    fn open(self, mut socket: Socket, first: Vec<Bytes>) -> Task {
        if let Either::Left(shared) = socket.io() {
            let outbound = &self.subscription.outbound;
            outbound.attach(shared.stream().clone(), !first.is_empty());
        }
        for frame in first {
            socket.queue(frame);
        }
        self.state.metrics.connections.increment(1.0);
        Task::Open(self, socket)
    }

    /// The connection ended: it leaves its room at once (nothing more is queued for it), then
    /// closes as `end` says, holding its place under the connection caps until it has.
    fn close(self, mut socket: Socket, end: End) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        // Nothing is written past this point but what the task writes (the close frame last).
        if let Some(tail) = self.subscription.outbound.detach() {
            socket.queue(tail);
        }
        let Connection {
            subscription,
            state,
            permit,
            opened,
            ..
        } = self;
        state.metrics.connections.decrement(1.0);
        state.metrics.closed(end.metric());
        log_close(&end, subscription.room(), &permit, opened);
        drop(subscription);
        Box::pin(async move {
            let _ = tokio::time::timeout(state.close_timeout, close(socket, end)).await;
            drop(permit);
        })
    }

    /// Nothing is under way (no publish waits for the store or a hook, no frame to read or
    /// write, no timer of its own) and its queue asks it to park: a plain-TCP connection may
    /// then park (`ParkedConnection`).
    fn may_park(&self, socket: &Socket) -> bool {
        self.receipts.is_empty()
            && self.hooked.as_ref().is_none_or(|hooked| hooked.is_quiet())
            && matches!(socket.io(), Either::Left(_))
            && socket.is_idle()
            && self.subscription.outbound.asked_to_park()
    }

    /// Does all the work that is ready; pending when none is left, ready when the connection ends.
    /// Reads and writes are independent: a client that stops reading keeps being read (and is
    /// evicted once its queue fills), and one that stops sending keeps being written to.
    fn poll_turn(&mut self, socket: &mut Socket, cx: &mut Context<'_>) -> Poll<End> {
        loop {
            let mut progress = false;
            // Frames are taken only once the last ones are written, so a stuck client's queue
            // fills up; the queue is still polled, to learn of an eviction.
            match self
                .subscription
                .outbound
                .poll_take(cx, socket.empty_outbox())
            {
                Poll::Ready(Err(Closed::SlowConsumer)) => {
                    return Poll::Ready(End::Close(SLOW_CONSUMER));
                }
                Poll::Ready(Err(Closed::ShuttingDown)) => {
                    return Poll::Ready(End::Close(GOING_AWAY));
                }
                Poll::Ready(Err(Closed::TokenExpired)) => {
                    return Poll::Ready(End::Close(TOKEN_EXPIRED));
                }
                Poll::Ready(Err(Closed::Unresponsive)) => {
                    return Poll::Ready(End::Abandon(PING_TIMEOUT));
                }
                Poll::Ready(Err(Closed::WriteFailed)) => return Poll::Ready(End::ClientGone),
                Poll::Ready(Err(why @ (Closed::Kicked | Closed::KickedForGood))) => {
                    let (code, default) = match why {
                        Closed::KickedForGood => {
                            (CloseCode(4004), "disconnected, do not reconnect")
                        }
                        _ => (CloseCode(4003), "disconnected"),
                    };
                    let reason = self.subscription.kick_reason();
                    let reason = reason.unwrap_or_else(|| Arc::from(default));
                    return Poll::Ready(End::Kicked { code, reason });
                }
                Poll::Ready(Ok(())) => progress = true,
                Poll::Pending => {}
            }
            if let Some(hooked) = &mut self.hooked
                && let Poll::Ready(news) = hooked.poll(cx)
            {
                progress = true;
                if let Some(end) = self.hook_news(socket, news) {
                    return Poll::Ready(end);
                }
            }
            while let Some(waiting) = self.receipts.front_mut() {
                let Poll::Ready(answered) = waiting.poll(cx, self.meta, &self.state.metrics) else {
                    break;
                };
                self.receipts.pop_front();
                self.in_flight_bytes -= answered.bytes;
                if let Some(reply) = answered.reply
                    && let Some(end) = self.reply(socket, reply)
                {
                    return Poll::Ready(end);
                }
                progress = true;
            }
            let held = socket.queued() > 0;
            match socket.poll_write(cx) {
                Poll::Ready(Err(_)) => return Poll::Ready(End::ClientGone),
                // Written out: the next turn tells the queue, so pushes write directly again.
                Poll::Ready(Ok(())) if held => progress = true,
                _ => {}
            }
            let judging = self.hooked.as_ref().map_or(0, |hooked| hooked.waiting());
            // A socket not yet registered is left alone when the connection is about to park:
            // the parking watches it, and registering it only to undo that would be wasted.
            let parking = matches!(socket.io(), Either::Left(shared) if !shared.is_watched())
                && self.may_park(socket);
            if self.receipts.len() + judging < MAX_IN_FLIGHT
                && self.in_flight_bytes < MAX_IN_FLIGHT_BYTES
                && !parking
            {
                match socket.poll_next(cx) {
                    Poll::Pending => {}
                    Poll::Ready(Ok(None) | Err(ReadError::Io(_))) => {
                        return Poll::Ready(End::ClientGone);
                    }
                    Poll::Ready(Err(ReadError::Protocol(error))) => {
                        return Poll::Ready(End::ProtocolError(error));
                    }
                    Poll::Ready(Ok(Some(incoming))) => {
                        self.subscription.outbound.liveness.heard();
                        progress = true;
                        if let Some(end) = self.take(socket, incoming) {
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
    fn take(&mut self, socket: &mut Socket, incoming: Incoming) -> Option<End> {
        let reply = match incoming {
            Incoming::Text(text) => {
                let liveness = &self.subscription.outbound.liveness;
                match self.session.on_text(
                    &text,
                    self.subscription.room(),
                    &self.state.auth,
                    &self.state.moderation,
                    liveness,
                ) {
                    Action::Publish(draft) => {
                        let bytes = draft.message.get().len();
                        self.in_flight_bytes += bytes;
                        let unjudged = match &mut self.hooked {
                            Some(hooked) => hooked.judge(draft, bytes),
                            None => Some(draft),
                        };
                        if let Some(draft) = unjudged {
                            self.publish(draft, bytes);
                        }
                        return None;
                    }
                    Action::Change(change) => {
                        let (request, id) = (change.request(), change.id);
                        let receipt = self.state.engine.change(change);
                        self.receipts.push_back(Waiting::Change {
                            receipt,
                            request,
                            id,
                        });
                        return None;
                    }
                    Action::Read(id) => {
                        let Some(user) = self.session.user().cloned().and_then(reads::Reader::of)
                        else {
                            return None; // The session answers reads without a name itself.
                        };
                        let reading = reads::mark(
                            &self.state,
                            user,
                            self.subscription.room().clone(),
                            id,
                            Some(self.subscription.member()),
                        );
                        self.receipts.push_back(Waiting::Read { reading, id });
                        return None;
                    }
                    Action::Typing(user) => {
                        self.state.engine.typing(self.subscription.room(), user);
                        return None;
                    }
                    Action::Reply(reply) => reply,
                    Action::Refuse(reason, reply) => {
                        self.state.metrics.publish_error(reason);
                        reply
                    }
                    Action::Close(close) => return Some(End::Close(close)),
                    Action::Nothing => return None,
                }
            }
            Incoming::Binary(_) => ErrorReply::new(
                "binary frames are not supported: send JSON text such as {\"message\": \"hi\"}",
                Request::Frame,
            )
            .frame(),
            Incoming::Ping(payload) => OutgoingFrame::pong(&payload),
            Incoming::Pong => return None,
            Incoming::Close(code) => return Some(End::ClientClosed(code)),
        };
        self.reply(socket, reply)
    }

    /// Hands a message to the engine; its receipt is waited for in order.
    fn publish(&mut self, draft: Draft, bytes: usize) {
        let nonce = draft.nonce.clone();
        let receipt = self.state.engine.publish(draft);
        self.receipts.push_back(Waiting::Publish {
            receipt,
            bytes,
            nonce,
        });
    }

    /// Acts on what the hooks said: a message judged (stored, or refused with the app's reason),
    /// or the connect hook's new word on this connection.
    fn hook_news(&mut self, socket: &mut Socket, news: HookNews) -> Option<End> {
        let (reason, nonce, metric) = match news {
            HookNews::Judged(Judgement::Store(draft), bytes) => {
                self.publish(draft, bytes);
                return None;
            }
            HookNews::Judged(Judgement::Refused { reason, nonce }, bytes) => {
                self.in_flight_bytes -= bytes;
                (reason, nonce, PublishError::HookRefused)
            }
            HookNews::Judged(Judgement::Failed { error, nonce }, bytes) => {
                self.in_flight_bytes -= bytes;
                let reason = ApiError::PublishHookFailed(error).to_string();
                (reason, nonce, PublishError::HookFailed)
            }
            HookNews::Renewed(Renewal::Extended(identity)) => {
                let liveness = &self.subscription.outbound.liveness;
                return match self.session.renewed(&identity) {
                    true => {
                        liveness.expire_at(identity.closes_at());
                        None
                    }
                    false => Some(End::Close(TOKEN_EXPIRED)),
                };
            }
            HookNews::Renewed(Renewal::Ended) => return Some(End::Close(TOKEN_EXPIRED)),
        };
        self.state.metrics.publish_error(metric);
        let refusal = ErrorReply::new(&reason, Request::Message).nonce(nonce.as_ref());
        self.reply(socket, refusal.frame())
    }

    /// Queues a frame for this client alone, unless it already owes it more than it reads: a
    /// client that keeps sending (bad frames, pings, publishes that fail) without reading the
    /// answers is a slow consumer.
    fn reply(&self, socket: &mut Socket, frame: OutgoingFrame) -> Option<End> {
        let frame = frame.into_bytes();
        let budget = self.subscription.outbound.limits().bytes as usize + REPLY_BUDGET_BYTES;
        if socket.queued_bytes() + frame.len() > budget {
            return Some(End::Close(SLOW_CONSUMER));
        }
        if let Some(tail) = self.subscription.outbound.hold() {
            socket.queue(tail);
        }
        socket.queue(frame);
        None
    }
}

impl End {
    /// How metrics name it.
    fn metric(&self) -> CloseReason {
        match self {
            End::ClientGone => CloseReason::ClientGone,
            End::ClientClosed(_) => CloseReason::Client,
            End::ProtocolError(_) => CloseReason::Protocol,
            End::Abandon(_) => CloseReason::Timeout,
            End::Close(close) if *close == SLOW_CONSUMER => CloseReason::SlowConsumer,
            End::Close(close) if *close == TOKEN_EXPIRED => CloseReason::Auth,
            End::Close(close) if *close == RATE_ABUSE => CloseReason::RateLimit,
            End::Close(_) => CloseReason::Shutdown,
            End::Kicked { .. } => CloseReason::Moderated,
        }
    }
}

/// One info line per connection the server closes (a client that leaves is not news), with
/// what an operator needs to tell why; a client gone without a close frame is a debug line.
fn log_close(end: &End, room: &RoomName, permit: &Permit, opened: Instant) {
    let (code, reason) = match end {
        End::ClientClosed(_) => return,
        End::ClientGone => {
            tracing::debug!(%room, peer = %permit.ip(), "client gone without a close frame");
            return;
        }
        End::ProtocolError(error) => (error.code, error.reason),
        End::Close(close) | End::Abandon(close) => *close,
        End::Kicked { code, reason } => (*code, &**reason),
    };
    if let Some(held_back) = CLOSE_LINES.allow() {
        let seconds = opened.elapsed().as_secs_f64();
        tracing::info!(
            %room,
            peer = %permit.ip(),
            duration_s = (seconds * 10.0).round() / 10.0,
            code = code.0,
            reason,
            closed_without_a_line = held_back,
            "closed a connection"
        );
    }
}

/// The closing handshake, by who ended the connection.
async fn close(mut socket: Socket, end: End) {
    match end {
        End::ClientGone => {}
        End::ClientClosed(code) => {
            socket.queue(OutgoingFrame::close(code.unwrap_or(CloseCode::NORMAL), "").into_bytes());
            let _ = socket.finish().await;
        }
        End::ProtocolError(error) => {
            socket.queue(OutgoingFrame::close(error.code, error.reason).into_bytes());
            // Read what the client still sends until it hangs up: closing a socket with unread
            // data makes the kernel send a reset, and the close frame would be lost.
            if socket.finish().await.is_ok() {
                let _ = poll_fn(|cx| socket.poll_discard(cx)).await;
            }
        }
        End::Close((code, reason)) => {
            socket.queue(OutgoingFrame::close(code, reason).into_bytes());
            if poll_fn(|cx| socket.poll_write(cx)).await.is_ok() {
                socket.await_close().await;
                let _ = socket.finish().await;
            }
        }
        End::Kicked { code, reason } => {
            // Cut to what fits in a close frame.
            socket.queue(OutgoingFrame::close(code, &reason).into_bytes());
            if poll_fn(|cx| socket.poll_write(cx)).await.is_ok() {
                socket.await_close().await;
                let _ = socket.finish().await;
            }
        }
        End::Abandon((code, reason)) => {
            socket.queue(OutgoingFrame::close(code, reason).into_bytes());
            let _ = poll_fn(|cx| Poll::Ready(socket.poll_write(cx))).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sizes the asserts beside the types bound (`--nocapture` prints them).
    #[test]
    fn sizes_an_idle_connection_pays() {
        let sizes = [
            ("transport::ws::Task", std::mem::size_of::<Task>()),
            (
                "transport::ws::ParkedConnection",
                std::mem::size_of::<ParkedConnection>(),
            ),
            (
                "transport::ws::Connection",
                std::mem::size_of::<Connection>(),
            ),
            ("hub::Member", crate::hub::MEMBER_BYTES),
            (
                "outbound::Outbound",
                std::mem::size_of::<crate::outbound::Outbound>(),
            ),
            (
                "outgoing::OutgoingFrame",
                std::mem::size_of::<OutgoingFrame>(),
            ),
        ];
        for (name, bytes) in sizes {
            println!("{name}: {bytes} bytes");
        }
    }
}
