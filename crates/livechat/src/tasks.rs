//! The server's background tasks and their one owner. Every task the server starts after
//! `Server::start` (sweeps, reloads, the engine's publisher and subscriber, short fire-and-forget
//! calls to Redis) is started through [`Tasks`], so that shutdown can tell them to stop and then
//! see every one of them end, instead of each kind being aborted, dropped or left running in its
//! own way.
//!
//! Two kinds of task, both tracked:
//! - [`Tasks::spawn`]: a loop that would run forever; it is dropped at its next `.await` once the
//!   server stops (the stop token is cancelled).
//! - [`Tasks::spawn_to_end`]: a task that ends by itself (a bounded one-shot call, a writer that
//!   drains its queue once the queue is closed, a loop that watches the token to finish cleanly);
//!   shutdown waits for it.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Starts background tasks, tells them to stop, and waits for them. Cheap to clone: every
/// clone starts tasks into the same set.
#[derive(Clone, Debug, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    stop: CancellationToken,
}

impl Tasks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `task` until it ends or the server stops, whichever comes first.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let stop = self.stop.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = task => {}
            }
        });
    }

    /// Runs `task` to its end: it must end by itself (bounded, or by watching [`Tasks::token`]
    /// or a queue that shutdown closes); shutdown waits for it.
    pub fn spawn_to_end<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(task);
    }

    /// Cancelled once the server (or this part) stops: for tasks that finish their work cleanly
    /// when told.
    pub fn token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// A set for one part of the server that it can stop on its own (the engine, after the last
    /// connection has published): its tasks are still this owner's, and stop with it too.
    pub fn part(&self) -> Tasks {
        Tasks {
            tracker: self.tracker.clone(),
            stop: self.stop.child_token(),
        }
    }

    /// Tells this set's tasks (and its parts') to stop, without waiting.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Tells every task to stop and waits up to `within` for them all (this set and every part)
    /// to end; returns how many had not.
    pub async fn stop_all(&self, within: Duration) -> usize {
        self.stop.cancel();
        self.tracker.close();
        match tokio::time::timeout(within, self.tracker.wait()).await {
            Ok(()) => 0,
            Err(_) => self.tracker.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn stopping_ends_loops_and_waits_for_tasks_that_end_by_themselves() {
        let tasks = Tasks::new();
        tasks.spawn(std::future::pending());
        let (done, finished) = tokio::sync::oneshot::channel();
        let stop = tasks.token();
        tasks.spawn_to_end(async move {
            stop.cancelled().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = done.send(());
        });
        assert_eq!(tasks.stop_all(Duration::from_secs(1)).await, 0);
        assert!(finished.await.is_ok(), "the clean task finished its work");
    }

    #[tokio::test(start_paused = true)]
    async fn a_part_stops_alone_and_its_tasks_are_still_waited_for() {
        let tasks = Tasks::new();
        let part = tasks.part();
        let stop = part.token();
        part.spawn_to_end(async move { stop.cancelled().await });
        tasks.spawn(std::future::pending());
        part.stop();
        tokio::task::yield_now().await;
        assert_eq!(
            tasks.tracker.len(),
            1,
            "the part's task ended, the loop runs on"
        );
        assert_eq!(tasks.stop_all(Duration::from_secs(1)).await, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn tasks_that_do_not_end_are_counted() {
        let tasks = Tasks::new();
        tasks.spawn_to_end(std::future::pending());
        assert_eq!(tasks.stop_all(Duration::from_millis(10)).await, 1);
    }
}
