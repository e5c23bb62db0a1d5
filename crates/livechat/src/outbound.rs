//! A connection's outbound queue: the hub pushes frames into it without ever waiting, and the
//! connection task takes everything queued in one go. It is bounded in frames and in bytes: a
//! push past either marks the connection as a slow consumer (its frames are dropped), and the
//! task learns it the next time it looks. The hub closes it the same way when the server shuts
//! down, and the keepalive sweep when the client stopped answering or its token expired. Nothing
//! is allocated until the first frame arrives.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use crate::keepalive::Liveness;
use crate::pacer::{LastWake, Pacer};

// One per connection, idle or not (the idle goal is 1.0 KiB per connection in all, at 18,000).
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
    /// The bytes of `frames`.
    bytes: usize,
    waker: Option<Waker>,
    closed: Option<Closed>,
    last_wake: LastWake,
}

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

    /// Queues frames, in order, and wakes the connection as `pacer` allows. A slow consumer when
    /// they do not all fit.
    pub fn push(&self, frames: &[Bytes], pacer: &Pacer) -> Result<(), Closed> {
        let mut state = self.state();
        if let Some(closed) = state.closed {
            return Err(closed);
        }
        // Bytes count against what is already waiting: a connection that keeps up takes any
        // burst (its frames are shared with the room, not copied), one that does not is closed
        // once its backlog passes the bound.
        let over_bytes = state.bytes >= self.limits.bytes as usize;
        if state.frames.len() + frames.len() > self.limits.frames as usize || over_bytes {
            state.frames = VecDeque::new();
            state.bytes = 0;
            close_locked(state, Closed::SlowConsumer);
            return Err(Closed::SlowConsumer);
        }
        state.frames.extend(frames.iter().cloned());
        state.bytes += frames.iter().map(Bytes::len).sum::<usize>();
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

    /// Queues a control frame (a ping) and wakes the connection at once. It is queued whatever
    /// the limits say (a ping is small and must not be refused), but its bytes are counted with
    /// the rest, so the next `push` finds that much less room; dropped when the connection is
    /// closing.
    pub fn push_control(&self, frame: Bytes) {
        let mut state = self.state();
        if state.closed.is_some() {
            return;
        }
        state.bytes += frame.len();
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
        if let Some(spare) = spare
            && !state.frames.is_empty()
        {
            std::mem::swap(&mut state.frames, spare);
            state.bytes = 0;
            return Poll::Ready(Ok(()));
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
}
