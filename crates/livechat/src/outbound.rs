//! A connection's outbound queue: the hub pushes frames into it without ever waiting, and the
//! connection task takes everything queued in one go. It is bounded in frames and in bytes: a
//! push past either marks the connection as a slow consumer (its frames are dropped), and the
//! task learns it the next time it looks. The hub closes it the same way when the server shuts
//! down, and the keepalive sweep when the client stopped answering or its token expired. Nothing
//! is allocated until the first frame arrives.
//!
//! Direct delivery: a plain-TCP WebSocket attaches its socket (`attach`), and from then on a push
//! writes its frames straight into the non-blocking socket from the pushing thread, without
//! waking the connection's task, when and only when nothing else is waiting to be written for
//! that connection: the queue is empty and the task holds no frames of its own (pongs, replies,
//! frames it took earlier and has not fully written). The task says when it holds frames
//! (`hold`, and taking the queue) and when it has written them all (taking with an empty outbox),
//! under the same lock as the direct write, and the direct write happens under that lock: so a
//! direct write never overtakes, nor interleaves with, a frame the task holds. What the socket
//! does not take (it is full: nothing written, or part of the frames, down to the unwritten tail
//! of a frame) is queued, counted against the bounds like any queued frame, and the task woken
//! to write it once the socket has room. Such a tail goes out before anything else: an eviction
//! keeps it, and `hold` and `detach` hand it to the task to write before its own frame (a reply,
//! the close frame), so that no frame ever lands inside another. A failed direct write closes the queue
//! (`Closed::WriteFailed`) and wakes the task, which ends the connection as for its own failed
//! write. The task detaches the socket before it writes its close frame (`detach`). TLS and
//! server-sent events never attach: every frame goes through the queue and the task.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use crate::keepalive::Liveness;
use crate::pacer::{LastWake, Pacer};

// One per connection, idle or not (the idle goal is 1.0 KiB per connection in all, at 18,000);
// 104 bytes keep it, with its reference counts, in a 128-byte allocation.
const _: () = assert!(std::mem::size_of::<Outbound>() <= 104);

pub struct Outbound {
    state: Mutex<State>,
    limits: QueueLimits,
    /// When the client was last heard from; read by the keepalive sweep.
    pub liveness: Liveness,
}

/// How much a queue holds before its connection counts as a slow consumer. 32 bits each keep
/// every idle connection's queue small.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    pub frames: u32,
    /// Past this many bytes waiting, a further push closes the connection.
    pub bytes: u32,
}

impl QueueLimits {
    pub fn new(frames: usize, bytes: usize) -> Self {
        Self {
            frames: u32::try_from(frames).unwrap_or(u32::MAX).max(1),
            bytes: u32::try_from(bytes).unwrap_or(u32::MAX).max(1),
        }
    }
}

#[derive(Default)]
struct State {
    frames: VecDeque<Bytes>,
    /// The bytes of `frames`, saturating (32 bits, as the bound: it keeps the queue's
    /// allocation, which every idle connection pays, in a smaller size class).
    bytes: u32,
    waker: Option<Waker>,
    closed: Option<Closed>,
    /// The task holds frames not yet fully written: direct writes wait behind them.
    task_holds: bool,
    /// The first queued frame is the tail of one written in part: it goes out whatever happens
    /// (an eviction keeps it), or the close frame would land in the middle of a frame.
    tail_first: bool,
    last_wake: LastWake,
    /// The connection's socket, written into directly when nothing waits (see the module's
    /// comment); `None` before the socket is open, after it closes, and for TLS and SSE.
    direct: Option<Arc<TcpStream>>,
    park: Park,
}

/// Whether the connection's task may give way to a parked connection
/// (`crate::transport::parking`); the state changes under the queue's lock, with the waker.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Park {
    /// Not a connection that can park (TLS, SSE), or one that is closing.
    #[default]
    Never,
    /// Its task runs, and stays until asked.
    Active,
    /// It parks the next time it waits with nothing under way: a new connection, or one the
    /// keepalive sweep found quiet.
    Asked,
    /// Parked: the waker is the parking's, which gives the connection a task again.
    Parked,
}

/// Frames handed to one direct vectored write.
const MAX_SLICES: usize = 64;

/// Why the queue takes no more frames: the connection is to close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The connection did not keep up: its queue overflowed.
    SlowConsumer,
    /// The server is shutting down.
    ShuttingDown,
    /// The client did not answer a ping in time.
    Unresponsive,
    /// The client's token expired and no fresh one came.
    TokenExpired,
    /// A moderator disconnected its user (or banned it from the room): it may reconnect.
    Kicked,
    /// Writing to the socket directly failed: the client is gone.
    WriteFailed,
    /// The same, and it is not to reconnect.
    KickedForGood,
}

impl Outbound {
    pub fn new(limits: QueueLimits) -> Self {
        Self {
            state: Mutex::default(),
            limits,
            liveness: Liveness::default(),
        }
    }

    pub fn limits(&self) -> QueueLimits {
        self.limits
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Writes frames into the socket directly when nothing waits before them and the socket has
    /// room; queues them, in order, and wakes the connection as `pacer` allows otherwise (or what
    /// the socket did not take). A slow consumer when they do not all fit.
    pub fn push(&self, frames: &[Bytes], pacer: &Pacer) -> Result<(), Closed> {
        let mut state = self.state();
        if let Some(closed) = state.closed {
            return Err(closed);
        }
        // Bytes count against what is already waiting: a connection that keeps up takes any
        // burst (its frames are shared with the room, not copied), one that does not is closed
        // once its backlog passes the bound.
        let over_bytes = state.bytes >= self.limits.bytes;
        if state.frames.len() + frames.len() > self.limits.frames as usize || over_bytes {
            let tail = take_tail(&mut state);
            state.bytes = tail.as_ref().map_or(0, byte_count);
            state.tail_first = tail.is_some();
            state.frames = VecDeque::from_iter(tail);
            close_locked(state, Closed::SlowConsumer);
            return Err(Closed::SlowConsumer);
        }
        let mut frames = frames;
        let mut tail = None;
        let direct = match &state.direct {
            Some(stream) if !state.task_holds && state.frames.is_empty() => {
                Some(write_direct(stream, frames))
            }
            _ => None,
        };
        match direct {
            None => {}
            Some(Err(_)) => {
                close_locked(state, Closed::WriteFailed);
                return Err(Closed::WriteFailed);
            }
            Some(Ok((written, partly))) => {
                frames = &frames[written..];
                tail = partly;
                if frames.is_empty() && tail.is_none() {
                    return Ok(());
                }
            }
        }
        if let Some(tail) = tail {
            state.bytes = state.bytes.saturating_add(byte_count(&tail));
            state.frames.push_back(tail);
            state.tail_first = true;
        }
        state.frames.extend(frames.iter().cloned());
        let added = frames
            .iter()
            .fold(0, |sum: u32, frame| sum.saturating_add(byte_count(frame)));
        state.bytes = state.bytes.saturating_add(added);
        if let Some(waker) = state.waker.take() {
            let now = pacer.admit(&mut state.last_wake);
            drop(state);
            if now {
                waker.wake();
            } else {
                pacer.defer(waker);
            }
        }
        Ok(())
    }

    /// Lets pushes write into `stream` directly; `holding`: the task already holds frames. The
    /// connection parks as soon as it has nothing to do.
    pub fn attach(&self, stream: Arc<TcpStream>, holding: bool) {
        let mut state = self.state();
        state.task_holds = holding;
        state.direct = Some(stream);
        state.park = Park::Asked;
    }

    /// Pushes queue their frames from now on: the connection is closing. Returns the tail of a
    /// frame written in part, for the task to write before anything of its own.
    pub fn detach(&self) -> Option<Bytes> {
        let mut state = self.state();
        state.direct = None;
        state.task_holds = true;
        state.park = Park::Never;
        take_tail(&mut state)
    }

    /// Whether the connection is to park once it has nothing under way.
    pub fn asked_to_park(&self) -> bool {
        self.state().park == Park::Asked
    }

    /// The keepalive sweep found the connection quiet: its task is woken to park, if it runs.
    pub fn ask_to_park(&self) {
        let mut state = self.state();
        if state.park != Park::Active {
            return;
        }
        state.park = Park::Asked;
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Parks the connection if it was asked to and nothing waits for its task: from now on what
    /// would wake the task (a frame queued, a close) wakes `unparker` instead. The task stays
    /// otherwise (false), and has been or will be woken for what waits.
    pub fn park(&self, unparker: Waker) -> bool {
        let mut state = self.state();
        let idle = state.frames.is_empty() && !state.task_holds && state.closed.is_none();
        if state.park != Park::Asked || !idle {
            return false;
        }
        state.park = Park::Parked;
        state.waker = Some(unparker);
        // Parked, it keeps no spare room (the queue swapped with the task's while busy).
        if state.frames.capacity() > 0 {
            state.frames = VecDeque::new();
        }
        true
    }

    /// It could not park after all: it keeps its task until asked again, or for good.
    pub fn stay(&self, for_good: bool) {
        let mut state = self.state();
        if state.park == Park::Asked {
            state.park = if for_good { Park::Never } else { Park::Active };
        }
    }

    /// The connection has a task again; it parks when asked.
    pub fn unparked(&self) {
        let mut state = self.state();
        if state.park == Park::Parked {
            state.park = Park::Active;
        }
    }

    /// The task is about to hold a frame of its own (a reply): direct writes wait until it has
    /// written it. Returns the tail of a frame written in part, for the task to write first.
    pub fn hold(&self) -> Option<Bytes> {
        let mut state = self.state();
        state.task_holds = true;
        take_tail(&mut state)
    }

    /// Queues a control frame (a ping) and wakes the connection at once. It is queued whatever
    /// the limits say (a ping is small and must not be refused), but its bytes are counted with
    /// the rest, so the next `push` finds that much less room; dropped when the connection is
    /// closing.
    pub fn push_control(&self, frame: Bytes) {
        let mut state = self.state();
        if state.closed.is_some() {
            return;
        }
        // Written directly like a delivery when nothing waits before it: a parked connection
        // stays parked (its client's answer unparks it).
        let mut frame = frame;
        match &state.direct {
            Some(stream) if !state.task_holds && state.frames.is_empty() => {
                match write_direct(stream, std::slice::from_ref(&frame)) {
                    Ok((1, None)) => return,
                    Ok((_, Some(tail))) => {
                        frame = tail;
                        state.tail_first = true;
                    }
                    Ok(_) => {}
                    Err(_) => return close_locked(state, Closed::WriteFailed),
                }
            }
            _ => {}
        }
        state.bytes = state.bytes.saturating_add(byte_count(&frame));
        state.frames.push_back(frame);
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Tells the connection to close (unless it already is closing).
    pub fn close(&self, why: Closed) {
        let state = self.state();
        if state.closed.is_none() {
            close_locked(state, why);
        }
    }

    /// When given an empty `spare` and frames are queued, swaps them into it (the queue keeps the
    /// spare's allocation) and is ready, even when closed: frames queued before a shutdown still
    /// go out. Otherwise ready with the reason once closed, else waits.
    pub fn poll_take(
        &self,
        cx: &mut Context<'_>,
        spare: Option<&mut VecDeque<Bytes>>,
    ) -> Poll<Result<(), Closed>> {
        let mut state = self.state();
        if let Some(spare) = spare {
            if !state.frames.is_empty() {
                std::mem::swap(&mut state.frames, spare);
                state.bytes = 0;
                state.task_holds = true;
                state.tail_first = false;
                return Poll::Ready(Ok(()));
            }
            // The task has written all it held.
            state.task_holds = false;
        }
        if let Some(closed) = state.closed {
            return Poll::Ready(Err(closed));
        }
        if !state
            .waker
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()))
        {
            state.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// A frame's length as the byte count takes it (saturating).
fn byte_count(frame: &Bytes) -> u32 {
    u32::try_from(frame.len()).unwrap_or(u32::MAX)
}

/// The tail of a frame written in part, out of the queue.
fn take_tail(state: &mut State) -> Option<Bytes> {
    if !std::mem::take(&mut state.tail_first) {
        return None;
    }
    let tail = state.frames.pop_front()?;
    state.bytes = state.bytes.saturating_sub(byte_count(&tail));
    Some(tail)
}

/// Writes `frames` into the socket until it is full: how many were written whole, and the
/// unwritten tail of the one written in part, if any. Never waits.
fn write_direct(stream: &TcpStream, frames: &[Bytes]) -> io::Result<(usize, Option<Bytes>)> {
    let mut done = 0;
    while done < frames.len() {
        let written = match &frames[done..] {
            // One frame, as at a room's usual pace: a plain write.
            [frame] => (&*stream).write(frame),
            more => {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let count = more.len().min(MAX_SLICES);
                for (slot, frame) in slices.iter_mut().zip(more) {
                    *slot = IoSlice::new(frame);
                }
                (&*stream).write_vectored(&slices[..count])
            }
        };
        let mut written = match written {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => written,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok((done, None)),
            Err(error) => return Err(error),
        };
        while let Some(frame) = frames.get(done) {
            if written < frame.len() {
                if written > 0 {
                    return Ok((done + 1, Some(frame.slice(written..))));
                }
                break;
            }
            written -= frame.len();
            done += 1;
        }
    }
    Ok((done, None))
}

/// Marks the queue closed and wakes its connection at once (closing is never paced).
fn close_locked(mut state: MutexGuard<'_, State>, why: Closed) {
    state.closed = Some(why);
    let waker = state.waker.take();
    drop(state);
    if let Some(waker) = waker {
        waker.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::time::Duration;

    #[tokio::test]
    async fn takes_everything_queued_and_evicts_past_the_capacity() {
        let frame = |text: &'static str| Bytes::from_static(text.as_bytes());
        let outbound = Outbound::new(QueueLimits::new(3, 1 << 20));
        let pacer = Pacer::new(Duration::ZERO);
        outbound.push(&[frame("1"), frame("2")], &pacer).unwrap();
        let mut taken = VecDeque::new();
        poll_fn(|cx| outbound.poll_take(cx, Some(&mut taken)))
            .await
            .unwrap();
        assert_eq!(taken, [frame("1"), frame("2")]);
        outbound.push(&[frame("3"), frame("4")], &pacer).unwrap();
        assert_eq!(
            outbound.push(&[frame("5"), frame("6")], &pacer),
            Err(Closed::SlowConsumer)
        );
        taken.clear();
        assert_eq!(
            poll_fn(|cx| outbound.poll_take(cx, Some(&mut taken))).await,
            Err(Closed::SlowConsumer),
            "a slow consumer's frames are dropped"
        );
    }

    #[tokio::test]
    async fn evicts_once_the_backlog_passes_the_byte_bound() {
        let outbound = Outbound::new(QueueLimits::new(100, 10));
        let pacer = Pacer::new(Duration::ZERO);
        let big = Bytes::from(vec![b'x'; 50]);
        outbound.push(std::slice::from_ref(&big), &pacer).unwrap();
        let mut taken = VecDeque::new();
        poll_fn(|cx| outbound.poll_take(cx, Some(&mut taken)))
            .await
            .unwrap();
        outbound
            .push(&[Bytes::from_static(b"12345")], &pacer)
            .unwrap();
        outbound
            .push(&[Bytes::from_static(b"678901")], &pacer)
            .unwrap();
        assert_eq!(
            outbound.push(&[Bytes::from_static(b"2")], &pacer),
            Err(Closed::SlowConsumer),
            "11 bytes waiting, over the bound of 10"
        );
    }

    #[tokio::test]
    async fn a_shutdown_lets_queued_frames_out_first() {
        let outbound = Outbound::new(QueueLimits::new(3, 1 << 20));
        let pacer = Pacer::new(Duration::ZERO);
        outbound.push(&[Bytes::from_static(b"1")], &pacer).unwrap();
        outbound.close(Closed::ShuttingDown);
        assert_eq!(outbound.push(&[], &pacer), Err(Closed::ShuttingDown));
        let mut taken = VecDeque::new();
        assert_eq!(
            poll_fn(|cx| outbound.poll_take(cx, Some(&mut taken))).await,
            Ok(())
        );
        assert_eq!(taken.len(), 1);
        taken.clear();
        assert_eq!(
            poll_fn(|cx| outbound.poll_take(cx, Some(&mut taken))).await,
            Err(Closed::ShuttingDown)
        );
    }

    /// A connected pair of loopback sockets: the server's side shared as a connection's is.
    async fn pair() -> (Arc<TcpStream>, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let server = Arc::new(accepted.unwrap().0.into_std().unwrap());
        (server, client.unwrap())
    }

    struct Count(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Polls the queue once as the task does (with an empty outbox), counting wake-ups.
    fn poll_once(
        outbound: &Outbound,
        waker: &Arc<Count>,
        taken: Option<&mut VecDeque<Bytes>>,
    ) -> Poll<Result<(), Closed>> {
        let waker = Waker::from(waker.clone());
        outbound.poll_take(&mut Context::from_waker(&waker), taken)
    }

    #[tokio::test]
    async fn parks_when_asked_and_nothing_waits_and_is_unparked_by_what_would_wake_it() {
        let (server, _client) = pair().await;
        let outbound = Outbound::new(QueueLimits::new(10, 1 << 20));
        let pacer = Pacer::new(Duration::ZERO);
        let (wakes, unparks) = (
            Arc::new(Count(Default::default())),
            Arc::new(Count(Default::default())),
        );
        let count = |counter: &Arc<Count>| counter.0.load(std::sync::atomic::Ordering::SeqCst);
        let unparker = Waker::from(unparks.clone());
        let mut taken = VecDeque::new();
        assert!(
            !outbound.park(unparker.clone()),
            "not attached (TLS, SSE): never"
        );
        outbound.attach(server.clone(), false);
        assert!(
            outbound.asked_to_park(),
            "a new connection parks once it waits"
        );
        assert_eq!(outbound.hold(), None);
        assert!(!outbound.park(unparker.clone()), "the task holds a frame");
        assert!(poll_once(&outbound, &wakes, Some(&mut taken)).is_pending());
        assert!(outbound.park(unparker.clone()));
        outbound
            .push(&[Bytes::from_static(b"direct")], &pacer)
            .unwrap();
        outbound.push_control(Bytes::from_static(b"ping"));
        assert_eq!(
            count(&unparks),
            0,
            "a delivery or a ping the socket takes wakes nobody"
        );
        outbound.close(Closed::Kicked);
        assert_eq!(count(&unparks), 1, "a close unparks");
        outbound.unparked();
        assert!(!outbound.asked_to_park(), "running again, until asked");
    }

    #[tokio::test]
    async fn the_sweep_asks_a_running_connection_to_park_by_waking_it() {
        let (server, _client) = pair().await;
        let outbound = Outbound::new(QueueLimits::new(10, 1 << 20));
        let wakes = Arc::new(Count(Default::default()));
        outbound.attach(server, false);
        outbound.stay(false);
        assert!(!outbound.asked_to_park());
        assert!(poll_once(&outbound, &wakes, Some(&mut VecDeque::new())).is_pending());
        outbound.ask_to_park();
        assert!(outbound.asked_to_park());
        assert_eq!(wakes.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        outbound.ask_to_park();
        assert_eq!(
            wakes.0.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "asked once"
        );
    }

    #[tokio::test]
    async fn writes_straight_into_the_socket_without_waking_the_task() {
        use tokio::io::AsyncReadExt;
        let (server, mut client) = pair().await;
        let outbound = Outbound::new(QueueLimits::new(10, 1 << 20));
        let pacer = Pacer::new(Duration::ZERO);
        let wakes = Arc::new(Count(Default::default()));
        let mut taken = VecDeque::new();
        outbound.attach(server, false);
        assert!(poll_once(&outbound, &wakes, Some(&mut taken)).is_pending());
        outbound
            .push(
                &[Bytes::from_static(b"ab"), Bytes::from_static(b"c")],
                &pacer,
            )
            .unwrap();
        let mut got = [0; 3];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"abc");
        assert_eq!(wakes.0.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert!(poll_once(&outbound, &wakes, Some(&mut taken)).is_pending());
        assert!(taken.is_empty());
    }

    #[tokio::test]
    async fn waits_behind_what_the_task_holds() {
        let (server, _client) = pair().await;
        let outbound = Outbound::new(QueueLimits::new(10, 1 << 20));
        let pacer = Pacer::new(Duration::ZERO);
        let wakes = Arc::new(Count(Default::default()));
        let mut taken = VecDeque::new();
        outbound.attach(server, true);
        assert!(poll_once(&outbound, &wakes, None).is_pending());
        outbound.push(&[Bytes::from_static(b"1")], &pacer).unwrap();
        outbound.push(&[Bytes::from_static(b"2")], &pacer).unwrap();
        assert_eq!(wakes.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(
            poll_once(&outbound, &wakes, Some(&mut taken)),
            Poll::Ready(Ok(()))
        );
        assert_eq!(taken, [Bytes::from_static(b"1"), Bytes::from_static(b"2")]);
        // Still held (the task has not written them): a push queues behind them.
        outbound.hold();
        outbound.push(&[Bytes::from_static(b"3")], &pacer).unwrap();
        taken.clear();
        assert_eq!(
            poll_once(&outbound, &wakes, Some(&mut taken)),
            Poll::Ready(Ok(()))
        );
        assert_eq!(taken, [Bytes::from_static(b"3")]);
    }

    #[tokio::test]
    async fn queues_what_a_full_socket_does_not_take_in_order() {
        use tokio::io::AsyncReadExt;
        let (server, mut client) = pair().await;
        let outbound = Outbound::new(QueueLimits::new(1 << 20, 1 << 30));
        let pacer = Pacer::new(Duration::ZERO);
        let wakes = Arc::new(Count(Default::default()));
        let mut taken = VecDeque::new();
        outbound.attach(server.clone(), false);
        assert!(poll_once(&outbound, &wakes, Some(&mut taken)).is_pending());
        let frames: Vec<Bytes> = (0..20_000u32)
            .map(|n| Bytes::from(format!("{n:0>999}|")))
            .collect();
        for frame in &frames {
            outbound.push(std::slice::from_ref(frame), &pacer).unwrap();
        }
        assert_eq!(
            wakes.0.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "woken once the socket was full"
        );
        let expected: Vec<u8> = frames.iter().flat_map(|frame| frame.to_vec()).collect();
        let reader = tokio::spawn(async move {
            let mut got = vec![0; expected.len()];
            client.read_exact(&mut got).await.unwrap();
            assert!(got == expected, "every byte once, in order");
        });
        // The task's part: take the queue, write it, until nothing is left.
        let mut writer = crate::websocket::WebSocket::new(
            crate::transport::shared_tcp::SharedTcp::Bare(server),
            1024,
        );
        while let Poll::Ready(Ok(())) = poll_once(&outbound, &wakes, Some(&mut taken)) {
            for frame in taken.drain(..) {
                writer.queue(frame);
            }
            poll_fn(|cx| writer.poll_write(cx)).await.unwrap();
        }
        reader.await.unwrap();
    }

    #[tokio::test]
    async fn a_failed_direct_write_closes_the_queue() {
        let (server, client) = pair().await;
        let outbound = Outbound::new(QueueLimits::new(10, 1 << 20));
        let pacer = Pacer::new(Duration::ZERO);
        let wakes = Arc::new(Count(Default::default()));
        outbound.attach(server.clone(), false);
        assert!(poll_once(&outbound, &wakes, Some(&mut VecDeque::new())).is_pending());
        // Our sending side shut: the next write fails (EPIPE).
        use std::os::fd::AsRawFd;
        assert_eq!(
            unsafe { libc::shutdown(server.as_raw_fd(), libc::SHUT_WR) },
            0
        );
        assert_eq!(
            outbound.push(&[Bytes::from_static(b"x")], &pacer),
            Err(Closed::WriteFailed)
        );
        assert_eq!(wakes.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        drop(client);
    }

    #[tokio::test]
    async fn an_eviction_keeps_the_tail_of_a_frame_written_in_part() {
        use tokio::io::AsyncReadExt;
        let (server, mut client) = pair().await;
        let outbound = Outbound::new(QueueLimits::new(4, 1 << 30));
        let pacer = Pacer::new(Duration::ZERO);
        let wakes = Arc::new(Count(Default::default()));
        let mut taken = VecDeque::new();
        outbound.attach(server.clone(), false);
        assert!(poll_once(&outbound, &wakes, Some(&mut taken)).is_pending());
        // Frames of an odd size, so that the write that fills the socket ends inside one.
        let frame = Bytes::from(vec![b'f'; 100_003]);
        let mut pushed = 0;
        while outbound.push(std::slice::from_ref(&frame), &pacer).is_ok() {
            pushed += 1;
            assert!(pushed < 10_000, "the socket never filled");
        }
        assert_eq!(
            poll_once(&outbound, &wakes, Some(&mut taken)),
            Poll::Ready(Ok(()))
        );
        let mut writer = crate::websocket::WebSocket::new(
            crate::transport::shared_tcp::SharedTcp::Bare(server),
            1,
        );
        for frame in taken.drain(..) {
            writer.queue(frame);
        }
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            got.len()
        });
        writer.finish().await.unwrap();
        let got = reader.await.unwrap();
        assert_eq!(got % frame.len(), 0, "{got} bytes: whole frames only");
        assert_eq!(
            poll_once(&outbound, &wakes, Some(&mut taken)),
            Poll::Ready(Err(Closed::SlowConsumer))
        );
    }
}
