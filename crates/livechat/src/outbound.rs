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

    /// Queues frames, in order; `Err(Evicted)` when they do not all fit (now or before).
    pub fn push(&self, frames: &[Bytes]) -> Result<(), Evicted> {
        let mut state = self.state();
        if state.evicted {
            return Err(Evicted);
        }
        if state.frames.len() + frames.len() > self.capacity {
            state.evicted = true;
            state.frames = VecDeque::new();
        } else {
            state.frames.extend(frames.iter().cloned());
        }
        let waker = state.waker.take();
        let evicted = state.evicted;
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        if evicted { Err(Evicted) } else { Ok(()) }
    }

    /// Ready with `Err(Evicted)` once the queue overflowed. Otherwise, when given an empty
    /// `spare` and frames are queued, swaps them into it (the queue keeps the spare's allocation)
    /// and is ready; else waits. Without a spare it only watches for an eviction.
    pub fn poll_take(
        &self,
        cx: &mut Context<'_>,
        spare: Option<&mut VecDeque<Bytes>>,
    ) -> Poll<Result<(), Evicted>> {
        let mut state = self.state();
        if state.evicted {
            return Poll::Ready(Err(Evicted));
        }
        if let Some(spare) = spare
            && !state.frames.is_empty()
        {
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
        let frame = |text: &'static str| Bytes::from_static(text.as_bytes());
        let outbound = Outbound::new(3);
        outbound.push(&[frame("1"), frame("2")]).unwrap();
        let mut taken = VecDeque::new();
        poll_fn(|cx| outbound.poll_take(cx, Some(&mut taken)))
            .await
            .unwrap();
        assert_eq!(taken, [frame("1"), frame("2")]);
        outbound.push(&[frame("3"), frame("4")]).unwrap();
        assert_eq!(outbound.push(&[frame("5"), frame("6")]), Err(Evicted));
        assert_eq!(
            poll_fn(|cx| outbound.poll_take(cx, None)).await,
            Err(Evicted)
        );
    }
}
