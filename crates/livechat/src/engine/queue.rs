//! The publish queue both engines use: publishes enter in call order (which becomes their order
//! in the room) and one consumer takes them off in batches. After a stop, whatever is still
//! queued, or comes later, is refused with `Stopped`, never dropped silently.

use tokio::sync::{mpsc, oneshot};

use super::{Accepted, EngineError, Receipt};
use crate::message::Draft;

pub type Answer = oneshot::Sender<Result<Accepted, EngineError>>;

/// `T`: other work for the consumer, kept in order with the publishes.
enum Job<T> {
    Publish(Draft, Answer),
    Other(T),
    Stop,
}

pub struct QueueSender<T>(mpsc::UnboundedSender<Job<T>>);

pub struct QueueReceiver<T>(mpsc::UnboundedReceiver<Job<T>>);

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
    (QueueSender(sender), QueueReceiver(receiver))
}

impl<T> Clone for QueueSender<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> QueueSender<T> {
    pub fn publish(&self, draft: Draft) -> Receipt {
        let (answer, receipt) = Receipt::channel();
        if let Err(mpsc::error::SendError(Job::Publish(_, answer))) =
            self.0.send(Job::Publish(draft, answer))
        {
            let _ = answer.send(Err(EngineError::Stopped));
        }
        receipt
    }

    /// Queues other work; false once the consumer has stopped.
    pub fn send(&self, work: T) -> bool {
        self.0.send(Job::Other(work)).is_ok()
    }

    pub fn stop(&self) {
        let _ = self.0.send(Job::Stop);
    }

    pub fn is_stopped(&self) -> bool {
        self.0.is_closed()
    }
}

impl<T> QueueReceiver<T> {
    /// Waits for work, then takes what is queued, up to `max` publishes.
    pub async fn next_batch(&mut self, max: usize) -> Option<Batch<T>> {
        let first = self.0.recv().await?;
        Some(self.take(first, max))
    }

    /// The same, for a consumer on its own thread.
    pub fn next_batch_blocking(&mut self, max: usize) -> Option<Batch<T>> {
        let first = self.0.blocking_recv()?;
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
                    batch.drafts.push(draft);
                    batch.answers.push(answer);
                }
                Job::Other(work) => batch.other.push(work),
                Job::Stop => batch.stop = true,
            }
            if !batch.stop && batch.drafts.len() < max {
                next = self.0.try_recv().ok();
            }
        }
        if batch.stop {
            self.refuse_the_rest();
        }
        batch
    }

    fn refuse_the_rest(&mut self) {
        self.0.close();
        while let Ok(job) = self.0.try_recv() {
            if let Job::Publish(_, answer) = job {
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
}
