//! A connection's outbound queue: the hub pushes frames into it without ever waiting, and the
//! connection task takes everything queued in one go. It is bounded: a push past the capacity
//! marks the connection as a slow consumer (its frames are dropped), and the task learns it the
//! next time it looks. Nothing is allocated until the first frame arrives.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

pub struct Outbound {
    state: Mutex<State>,
    capacity: usize,
}

#[derive(Default)]
struct State {
    frames: VecDeque<Bytes>,
    waker: Option<Waker>,
    evicted: bool,
}

/// The connection did not keep up: its queue overflowed.
#[derive(Debug, PartialEq, Eq)]
pub struct Evicted;

impl Outbound {
    pub fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::default(),
            capacity: capacity.max(1),
        }
    }

    /// Frames it holds before the connection counts as a slow consumer.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues a frame; `Err(Evicted)` when the queue is full (now or before).
    pub fn push(&self, frame: Bytes) -> Result<(), Evicted> {
        let mut state = self.state();
        if state.evicted {
            return Err(Evicted);
        }
        if state.frames.len() >= self.capacity {
            state.evicted = true;
            state.frames = VecDeque::new();
        } else {
            state.frames.push_back(frame);
        }
        let waker = state.waker.take();
        let evicted = state.evicted;
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        if evicted { Err(Evicted) } else { Ok(()) }
    }

    /// Ready with `Err(Evicted)` once the queue overflowed. Otherwise, when `take` is set and
    /// frames are queued, swaps them into `spare` (which must be empty; the queue keeps the
    /// spare's allocation) and is ready; else waits.
    pub fn poll_take(
        &self,
        cx: &mut Context<'_>,
        take: bool,
        spare: &mut VecDeque<Bytes>,
    ) -> Poll<Result<(), Evicted>> {
        let mut state = self.state();
        if state.evicted {
            return Poll::Ready(Err(Evicted));
        }
        if take && !state.frames.is_empty() {
            std::mem::swap(&mut state.frames, spare);
            return Poll::Ready(Ok(()));
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    #[tokio::test]
    async fn takes_everything_queued_and_evicts_past_the_capacity() {
        let outbound = Outbound::new(2);
        outbound.push(Bytes::from_static(b"1")).unwrap();
        outbound.push(Bytes::from_static(b"2")).unwrap();
        let mut taken = VecDeque::new();
        poll_fn(|cx| outbound.poll_take(cx, true, &mut taken))
            .await
            .unwrap();
        assert_eq!(taken, [Bytes::from_static(b"1"), Bytes::from_static(b"2")]);
        taken.clear();
        outbound.push(Bytes::from_static(b"3")).unwrap();
        outbound.push(Bytes::from_static(b"4")).unwrap();
        assert_eq!(outbound.push(Bytes::from_static(b"5")), Err(Evicted));
        assert_eq!(
            poll_fn(|cx| outbound.poll_take(cx, false, &mut taken)).await,
            Err(Evicted)
        );
    }
}
