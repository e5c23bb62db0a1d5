//! The publish queue both engines use: publishes enter in call order (which becomes their order
//! in the room) and one consumer takes them off in batches. It holds at most `MAX_QUEUED_BYTES`
//! of messages: past that (the store is slower than the publishers), a publish is refused at
//! once with `Overloaded`. After a stop, whatever is still queued, or comes later, is refused
//! with `Stopped`. Nothing is ever dropped silently.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{mpsc, oneshot};

use super::{Accepted, EngineError, Receipt};
use crate::message::Draft;

pub type Answer = oneshot::Sender<Result<Accepted, EngineError>>;

/// Bytes of messages waiting for the store, over every connection and request.
pub const MAX_QUEUED_BYTES: usize = 64 * 1024 * 1024;

/// `T`: other work for the consumer, kept in order with the publishes.
enum Job<T> {
    Publish(Draft, Answer),
    Other(T),
    Stop,
}

pub struct QueueSender<T> {
    jobs: mpsc::UnboundedSender<Job<T>>,
    queued_bytes: Arc<AtomicUsize>,
}

pub struct QueueReceiver<T> {
    jobs: mpsc::UnboundedReceiver<Job<T>>,
    queued_bytes: Arc<AtomicUsize>,
}

/// What was queued, in order, up to a batch.
pub struct Batch<T> {
    pub drafts: Vec<Draft>,
    pub answers: Vec<Answer>,
    pub other: Vec<T>,
    /// A stop was queued: this is the last batch.
    pub stop: bool,
}

pub fn queue<T>() -> (QueueSender<T>, QueueReceiver<T>) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let queued_bytes = Arc::new(AtomicUsize::new(0));
    (
        QueueSender {
            jobs: sender,
            queued_bytes: queued_bytes.clone(),
        },
        QueueReceiver {
            jobs: receiver,
            queued_bytes,
        },
    )
}

impl<T> Clone for QueueSender<T> {
    fn clone(&self) -> Self {
        Self {
            jobs: self.jobs.clone(),
            queued_bytes: self.queued_bytes.clone(),
        }
    }
}

impl<T> QueueSender<T> {
    pub fn publish(&self, draft: Draft) -> Receipt {
        let (answer, receipt) = Receipt::channel();
        let bytes = draft.stored_bytes();
        let queued = self.queued_bytes.fetch_add(bytes, Ordering::AcqRel);
        // One message is always let in, however large, so a lone big publish is not refused.
        if queued > 0 && queued + bytes > MAX_QUEUED_BYTES {
            self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
            let _ = answer.send(Err(EngineError::Overloaded));
            return receipt;
        }
        if let Err(mpsc::error::SendError(Job::Publish(_, answer))) =
            self.jobs.send(Job::Publish(draft, answer))
        {
            self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
            let _ = answer.send(Err(EngineError::Stopped));
        }
        receipt
    }

    /// Queues other work; false once the consumer has stopped.
    pub fn send(&self, work: T) -> bool {
        self.jobs.send(Job::Other(work)).is_ok()
    }

    pub fn stop(&self) {
        let _ = self.jobs.send(Job::Stop);
    }

    pub fn is_stopped(&self) -> bool {
        self.jobs.is_closed()
    }
}

impl<T> QueueReceiver<T> {
    /// Waits for work, then takes what is queued, up to `max` publishes.
    pub async fn next_batch(&mut self, max: usize) -> Option<Batch<T>> {
        let first = self.jobs.recv().await?;
        Some(self.take(first, max))
    }

    /// The same, for a consumer on its own thread.
    pub fn next_batch_blocking(&mut self, max: usize) -> Option<Batch<T>> {
        let first = self.jobs.blocking_recv()?;
        Some(self.take(first, max))
    }

    fn take(&mut self, first: Job<T>, max: usize) -> Batch<T> {
        let mut batch = Batch {
            drafts: Vec::new(),
            answers: Vec::new(),
            other: Vec::new(),
            stop: false,
        };
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Publish(draft, answer) => {
                    self.queued_bytes
                        .fetch_sub(draft.stored_bytes(), Ordering::AcqRel);
                    batch.drafts.push(draft);
                    batch.answers.push(answer);
                }
                Job::Other(work) => batch.other.push(work),
                Job::Stop => batch.stop = true,
            }
            if !batch.stop && batch.drafts.len() < max {
                next = self.jobs.try_recv().ok();
            }
        }
        if batch.stop {
            self.refuse_the_rest();
        }
        batch
    }

    fn refuse_the_rest(&mut self) {
        self.jobs.close();
        while let Ok(job) = self.jobs.try_recv() {
            if let Job::Publish(draft, answer) = job {
                self.queued_bytes
                    .fetch_sub(draft.stored_bytes(), Ordering::AcqRel);
                let _ = answer.send(Err(EngineError::Stopped));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::RoomName;
    use serde_json::value::RawValue;

    fn draft(n: u32) -> Draft {
        Draft {
            room: RoomName::parse("r").unwrap(),
            message: RawValue::from_string(n.to_string()).unwrap(),
            user: None,
            nonce: None,
            reply_to: None,
            from_layer: false,
        }
    }

    #[tokio::test]
    async fn batches_in_order_and_refuses_after_a_stop() {
        let (sender, mut receiver) = queue::<&str>();
        let _first = sender.publish(draft(1));
        sender.send("prune");
        let _second = sender.publish(draft(2));
        let batch = receiver.next_batch(10).await.unwrap();
        let order: Vec<&str> = batch.drafts.iter().map(|d| d.message.get()).collect();
        assert_eq!(order, ["1", "2"]);
        assert_eq!(batch.other, ["prune"]);
        assert!(!batch.stop);

        sender.stop();
        let late = sender.publish(draft(3));
        assert!(receiver.next_batch(10).await.unwrap().stop);
        assert!(matches!(late.await, Err(EngineError::Stopped)));
        assert!(matches!(
            sender.publish(draft(4)).await,
            Err(EngineError::Stopped)
        ));
        assert!(sender.is_stopped());
    }

    #[tokio::test]
    async fn refuses_at_once_past_its_bytes() {
        let (sender, mut receiver) = queue::<()>();
        let big = |room: &str| Draft {
            room: RoomName::parse(room).unwrap(),
            message: RawValue::from_string(format!("\"{}\"", "x".repeat(MAX_QUEUED_BYTES / 2 - 2)))
                .unwrap(),
            user: None,
            nonce: None,
            reply_to: None,
            from_layer: false,
        };
        let _first = sender.publish(big("r"));
        let _second = sender.publish(big("r"));
        assert!(matches!(
            sender.publish(big("r")).await,
            Err(EngineError::Overloaded)
        ));
        // Once the consumer takes the queue, room comes back.
        assert_eq!(receiver.next_batch(10).await.unwrap().drafts.len(), 2);
        let _again = sender.publish(big("r"));
        assert_eq!(receiver.next_batch(10).await.unwrap().drafts.len(), 1);
    }
}
