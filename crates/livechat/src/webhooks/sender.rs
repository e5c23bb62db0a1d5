//! The webhook sender: reads the outbox in order and posts its events to the app, up to
//! `BATCH` at a time or `GATHER` after the first one waited, one batch in flight at a time (so
//! events reach the app in order), again and again with a growing pause until the app answers
//! 2xx, then acknowledges them. It runs until the server's shutdown.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::{Outbox, Recorded};
use crate::hooks::Endpoint;
use crate::metrics::{Hook, HookOutcome, Metrics};
use crate::store::now_ms;
use crate::throttle::Throttle;

/// Events per request at most.
pub const BATCH: usize = 100;
/// How long the first event of a batch waits for others.
const GATHER: Duration = Duration::from_millis(100);
/// How often an empty outbox is looked at again.
const IDLE: Duration = Duration::from_millis(100);
/// How often the outbox is looked at (its size, what it dropped) while deliveries pause.
const LOOK_EVERY: Duration = Duration::from_secs(1);
/// The pause after a failed delivery doubles from the first to the last.
const FIRST_RETRY: Duration = Duration::from_millis(500);
const LAST_RETRY: Duration = Duration::from_secs(60);

static FAILURE_LINES: Throttle = Throttle::new(Duration::from_secs(10), 1);

/// Delivers until `shutdown`.
pub async fn run(
    outbox: Arc<dyn Outbox>,
    endpoint: Endpoint,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut sender = Sender {
        outbox,
        endpoint,
        metrics,
        retry: FIRST_RETRY,
        dropped_told: 0,
        dropping: false,
    };
    while !shutdown.is_cancelled() {
        let pause = sender.turn().await;
        let until = tokio::time::Instant::now() + pause;
        // A long pause (the app down) still looks at the outbox every second, for the metrics.
        while tokio::time::Instant::now() < until {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(until.min(tokio::time::Instant::now() + LOOK_EVERY)) => {}
            }
            sender.look().await;
        }
    }
}

struct Sender {
    outbox: Arc<dyn Outbox>,
    endpoint: Endpoint,
    metrics: Arc<Metrics>,
    retry: Duration,
    /// Events dropped (the outbox full) already counted and told.
    dropped_told: u64,
    dropping: bool,
}

impl Sender {
    /// One look at the outbox and, if a batch is ready, one delivery; how long to wait before
    /// the next.
    async fn turn(&mut self) -> Duration {
        self.look().await;
        let batch = match self.outbox.read(BATCH).await {
            Ok(batch) => batch,
            Err(error) => {
                if let Some(held_back) = FAILURE_LINES.allow() {
                    tracing::warn!(%error, failures_without_a_line = held_back, "cannot read the webhook outbox");
                }
                return self.failed();
            }
        };
        let Some(first) = batch.first() else {
            return IDLE;
        };
        let waited = Duration::from_millis(now_ms().saturating_sub(first.ts));
        if batch.len() < BATCH && waited < GATHER {
            return GATHER - waited;
        }
        match self.deliver(&batch).await {
            Ok(()) => {
                if let Err(error) = self.outbox.ack(&batch).await {
                    // Delivered but not acknowledged here: sent again later (at least once).
                    tracing::warn!(%error, "cannot mark webhook events delivered");
                    return self.failed();
                }
                let now = now_ms();
                for event in &batch {
                    let seconds = now.saturating_sub(event.ts) as f64 / 1000.0;
                    self.metrics.webhook_delivery_seconds.record(seconds);
                }
                self.retry = FIRST_RETRY;
                Duration::ZERO
            }
            Err(why) => {
                if let Some(held_back) = FAILURE_LINES.allow() {
                    tracing::warn!(
                        events = batch.len(),
                        error = %why,
                        retry_in_ms = self.retry.as_millis() as u64,
                        failures_without_a_line = held_back,
                        "webhook delivery failed; the events will be sent again"
                    );
                }
                self.failed()
            }
        }
    }

    /// Posts a batch: `Ok` once the app answered 2xx.
    async fn deliver(&self, batch: &[Recorded]) -> Result<(), String> {
        let mut body = String::from("{\"events\":[");
        for (n, event) in batch.iter().enumerate() {
            if n > 0 {
                body.push(',');
            }
            body.push_str(&event.json());
        }
        body.push_str("]}");
        let outcome = match self.endpoint.post(Bytes::from(body)).await {
            Ok(answer) if (200..300).contains(&answer.status) => Ok(()),
            Ok(answer) => Err(format!("it answered {}", answer.status)),
            Err(error) => Err(error.to_string()),
        };
        let counted = match &outcome {
            Ok(()) => HookOutcome::Accepted,
            Err(_) => HookOutcome::Failed,
        };
        self.metrics.hook_call(Hook::Webhook, counted);
        outcome
    }

    /// The pause after a failure (with jitter), doubling up to `LAST_RETRY`.
    fn failed(&mut self) -> Duration {
        let pause = self.retry;
        self.retry = (self.retry * 2).min(LAST_RETRY);
        let jitter = now_ms() % (pause.as_millis() as u64 / 4 + 1);
        pause + Duration::from_millis(jitter)
    }

    /// How many events wait, and how many were dropped since the last look (saying when
    /// dropping starts and ends).
    async fn look(&mut self) {
        if let Ok(pending) = self.outbox.pending().await {
            self.metrics.webhook_pending.set(pending as f64);
        }
        self.count_dropped();
    }

    fn count_dropped(&mut self) {
        let dropped = self.outbox.dropped();
        let new = dropped - self.dropped_told.min(dropped);
        if new > 0 {
            self.metrics.webhook_events_dropped.increment(new);
            if !self.dropping {
                tracing::warn!(
                    "webhook outbox full (LIVECHAT_WEBHOOK_OUTBOX_BYTES): new events are dropped \
                     until the app takes the ones waiting"
                );
            }
            self.dropping = true;
        } else if self.dropping {
            tracing::info!(
                dropped = dropped,
                "webhook outbox has room again: events are recorded again"
            );
            self.dropping = false;
        }
        self.dropped_told = dropped;
    }
}
