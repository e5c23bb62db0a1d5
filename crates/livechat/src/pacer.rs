//! Wake-up pacing for connections. Under load a connection is woken to write at most once per
//! tick, so frames that arrive close together leave in one write: the cost of a loopback or
//! network write is mostly per write (system call, TCP segment, waking the reader), not per byte.
//! The first frame after a quiet tick wakes its connection at once, so pacing adds no delay at
//! light load, and at most one tick under load. Ticks are read from the clock; the pacer's task
//! runs only while wake-ups wait for the next tick (an idle server does not tick).

use std::sync::{Arc, Mutex};
use std::task::Waker;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

pub struct Pacer {
    period: Duration,
    /// Tick 1 began here: a connection never woken (tick 0) is woken at once.
    start: Instant,
    /// Connections to wake at the next tick.
    deferred: Mutex<Vec<Waker>>,
    /// A first wake-up was deferred: the task has a tick to wait for.
    waiting: Notify,
}

/// When a connection was last woken, in ticks; kept by each connection's queue.
#[derive(Debug, Default, Clone, Copy)]
pub struct LastWake(u64);

impl Pacer {
    /// `period` zero: no pacing, every wake-up happens at once.
    pub fn new(period: Duration) -> Arc<Self> {
        Arc::new(Self {
            period,
            start: Instant::now(),
            deferred: Mutex::default(),
            waiting: Notify::new(),
        })
    }

    /// The tick now: 1 during the first period, and so on.
    fn tick(&self) -> u64 {
        let elapsed = self.start.elapsed().as_nanos() / self.period.as_nanos().max(1);
        u64::try_from(elapsed).unwrap_or(u64::MAX - 1) + 1
    }

    /// Whether a connection may be woken now: not yet woken in this tick. When not, the caller
    /// hands its waker to `defer`, and that wake-up counts as the next tick's.
    pub fn admit(&self, last: &mut LastWake) -> bool {
        if self.period.is_zero() {
            return true;
        }
        let now = self.tick();
        if last.0 < now {
            last.0 = now;
            true
        } else {
            last.0 = now + 1;
            false
        }
    }

    /// Wakes at the next tick.
    pub fn defer(&self, waker: Waker) {
        let mut deferred = self
            .deferred
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        deferred.push(waker);
        if deferred.len() == 1 {
            self.waiting.notify_one();
        }
    }

    /// Wakes deferred connections at each tick they wait for, until the runtime stops; a pacer
    /// with a zero period returns at once.
    pub async fn run(self: Arc<Self>) {
        if self.period.is_zero() {
            return;
        }
        let mut waking = Vec::new();
        loop {
            self.waiting.notified().await;
            // The next tick begins at the end of this one: `tick` periods after the start.
            let periods = self
                .period
                .as_nanos()
                .saturating_mul(u128::from(self.tick()));
            let next = Duration::from_nanos(u64::try_from(periods).unwrap_or(u64::MAX));
            let next = self.start.checked_add(next).unwrap_or_else(Instant::now);
            tokio::time::sleep_until(next).await;
            std::mem::swap(
                &mut *self
                    .deferred
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()),
                &mut waking,
            );
            waking.drain(..).for_each(Waker::wake);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);

    fn wake(pacer: &Pacer, count: &Arc<Count>, last: &mut LastWake) {
        let waker = Waker::from(count.clone());
        if pacer.admit(last) {
            waker.wake();
        } else {
            pacer.defer(waker);
        }
    }

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn wakes_at_once_then_once_per_tick() {
        let pacer = Pacer::new(Duration::from_millis(5));
        tokio::spawn(pacer.clone().run());
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let woken = || count.0.load(Ordering::SeqCst);
        let mut last = LastWake::default();
        wake(&pacer, &count, &mut last);
        assert_eq!(woken(), 1, "the first wake-up is immediate");
        wake(&pacer, &count, &mut last);
        assert_eq!(woken(), 1, "the second in the same tick waits");
        tokio::time::sleep(Duration::from_millis(6)).await;
        assert_eq!(woken(), 2, "and comes with the next tick");
        wake(&pacer, &count, &mut last);
        assert_eq!(woken(), 2, "that tick's wake-up was spent");
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(woken(), 3);
        tokio::time::sleep(Duration::from_secs(3600)).await;
        wake(&pacer, &count, &mut last);
        assert_eq!(woken(), 4, "after a quiet hour (no ticks), at once again");
        wake(&pacer, &count, &mut last);
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(woken(), 5, "and paced again");
    }

    #[test]
    fn a_zero_period_never_defers() {
        let pacer = Pacer::new(Duration::ZERO);
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let mut last = LastWake::default();
        for _ in 0..3 {
            wake(&pacer, &count, &mut last);
        }
        assert_eq!(count.0.load(Ordering::SeqCst), 3);
    }
}
