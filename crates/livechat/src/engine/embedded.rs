//! The embedded engine: one node, history in a local store (SQLite or memory).
//!
//! A single writer thread takes publishes off a queue in arrival order, appends whatever has
//! queued up as one batch (one commit), then hands each stored message to the hub and answers its
//! publisher. Because one thread does both, delivery order is id order, and nothing is delivered
//! or acknowledged before it is committed.
//!
//! When the store cannot write (the disk is full), publishes and changes are refused with the
//! reason (`EngineError::StorageFull`: HTTP 507, an error frame), reads and live connections go
//! on, and readiness says why. A small write is tried every `PROBE_EVERY` while it lasts, so that
//! readiness comes back by itself once space is freed and writes have not failed for `SETTLE`.
//! Each change of state is logged once and shown by the `livechat_store_full` gauge.

use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::sync::oneshot;

use super::queue::{Answer, QueueReceiver, QueueSender, queue};
use super::{
    Accepted, ChangeReceipt, Engine, EngineError, ObserverSlot, Receipt, RoomCount, StoredObserver,
};
use crate::change::{Change, ChangeRefused, Changed};
use crate::control::{Control, ModerationNews};
use crate::epoch::Epoch;
use crate::hub::{Audience, Hub};
use crate::message::{Author, Draft, StoredMessage};
use crate::metrics::Metrics;
use crate::moderation::Ban;
use crate::presence::{self, PresenceList, Roster};
use crate::room::RoomName;
use crate::store::{
    Appended, Authored, HistoryQuery, HistoryStore, Page, Place, ReadPosition, RecentRoom,
    Retention, RoomStats, StoreError, now_ms,
};
use crate::tasks::Tasks;
use crate::webhooks::{Event, Outbox, OutboxError, Recorded};

/// Most messages committed in one transaction.
const MAX_BATCH: usize = 4096;
/// How often a write is tried while the store cannot write.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How long writes must go without failing before the store counts as writing again: on a disk
/// nearly full, small writes succeed between large ones that fail, and readiness should not
/// flap with them (publishes are tried, and stored when they fit, all along).
const SETTLE: Duration = Duration::from_secs(3);
/// History pages read at once; more requests wait their turn, so that memory is bounded by this
/// many pages.
const CONCURRENT_READS: usize = 8;

/// Work for the writer besides publishes, in order with them.
enum Work {
    /// Age retention and forgetting old nonces.
    Prune,
    /// A small write, to learn whether the store can write again.
    Probe,
    Change(
        Change,
        oneshot::Sender<Result<Result<Changed, ChangeRefused>, EngineError>>,
    ),
}

pub struct EmbeddedEngine {
    jobs: QueueSender<Work>,
    hub: Arc<Hub>,
    roster: Arc<Roster>,
    store: Arc<dyn HistoryStore>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// The last store failure, cleared by the next successful write.
    failure: Arc<Mutex<Option<Failure>>>,
    reads: Arc<tokio::sync::Semaphore>,
    moderation: OnceLock<Arc<dyn ModerationNews>>,
    stored: ObserverSlot,
}

impl EmbeddedEngine {
    /// Starts the writer thread (and, with a maximum age, the pruning timer; needs a tokio runtime).
    pub fn start(
        store: Arc<dyn HistoryStore>,
        hub: Arc<Hub>,
        roster: Arc<Roster>,
        retention: Retention,
        edit_window: Option<Duration>,
        metrics: Arc<Metrics>,
        tasks: Tasks,
    ) -> Self {
        let (jobs, queued) = queue();
        let failure = Arc::new(Mutex::new(None));
        let stored = ObserverSlot::default();
        let writer = Writer {
            stored: stored.clone(),
            store: store.clone(),
            hub: hub.clone(),
            failure: failure.clone(),
            max_age: retention.max_age,
            dedupe_window: retention.dedupe_window,
            edit_window,
            metrics,
        };
        // Exported from the start, not only once the disk first fills.
        writer.metrics.store_full.set(0.0);
        let writer = std::thread::Builder::new()
            .name("history-writer".into())
            .spawn(move || writer.run(queued))
            .expect("spawning the history writer thread");
        {
            let shortest = retention.max_age.map_or(retention.dedupe_window, |age| {
                age.min(retention.dedupe_window)
            });
            let jobs = jobs.clone();
            let every = (shortest / 10).clamp(Duration::from_millis(100), Duration::from_secs(60));
            tasks.spawn(async move {
                let mut ticks = tokio::time::interval(every);
                while jobs.send(Work::Prune) {
                    ticks.tick().await;
                }
            });
        }
        {
            let (jobs, failure) = (jobs.clone(), failure.clone());
            tasks.spawn(async move {
                let mut ticks = tokio::time::interval(PROBE_EVERY);
                loop {
                    ticks.tick().await;
                    if failing(&failure) && !jobs.send(Work::Probe) {
                        break;
                    }
                }
            });
        }
        Self {
            jobs,
            hub,
            roster,
            store,
            writer: Mutex::new(Some(writer)),
            failure,
            reads: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_READS)),
            moderation: OnceLock::new(),
            stored,
        }
    }
}

impl EmbeddedEngine {
    /// Runs a store call on the blocking pool.
    fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(&dyn HistoryStore) -> Result<T, crate::store::StoreError> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, EngineError>> {
        let store = self.store.clone();
        async move {
            tokio::task::spawn_blocking(move || call(&*store))
                .await
                .map_err(|error| EngineError::Unavailable(error.to_string()))?
                .map_err(|error| store_failed(&error))
        }
        .boxed()
    }
}

/// What the publisher or caller is told of a store error.
fn store_failed(error: &StoreError) -> EngineError {
    match error {
        StoreError::Unencodable(unencodable) => EngineError::Unencodable(unencodable.clone()),
        _ if error.is_full() => EngineError::StorageFull,
        _ => EngineError::Unavailable(error.to_string()),
    }
}

/// Why the store cannot write, as readiness says it.
struct Failure {
    reason: String,
    full: bool,
    last: std::time::Instant,
}

fn failing(failure: &Mutex<Option<Failure>>) -> bool {
    failure.lock().unwrap_or_else(|p| p.into_inner()).is_some()
}

impl Engine for EmbeddedEngine {
    fn publish(&self, draft: Draft) -> Receipt {
        self.jobs.publish(draft)
    }

    fn change(&self, change: Change) -> ChangeReceipt {
        let (answer, receipt) = ChangeReceipt::channel();
        // A writer that stopped drops the work, and with it the answer: the receipt says so.
        let _ = self.jobs.send(Work::Change(change, answer));
        receipt
    }

    fn changed_since(
        &self,
        room: &RoomName,
        through: u64,
        reader: Option<String>,
        limit: usize,
    ) -> BoxFuture<'static, Result<Vec<StoredMessage>, EngineError>> {
        let room = room.clone();
        self.blocking(move |store| store.changed_since(&room, through, reader.as_deref(), limit))
    }

    fn control(&self, command: Control) -> BoxFuture<'static, Result<(), EngineError>> {
        command.apply(&self.hub, self.roster.node(), self.moderation.get());
        std::future::ready(Ok(())).boxed()
    }

    fn mark_read(
        &self,
        user: &str,
        room: &RoomName,
        id: u64,
    ) -> BoxFuture<'static, Result<u64, EngineError>> {
        let (user, room) = (user.to_owned(), room.clone());
        self.blocking(move |store| store.mark_read(&user, &room, id))
    }

    fn read_positions(
        &self,
        user: &str,
    ) -> BoxFuture<'static, Result<Vec<ReadPosition>, EngineError>> {
        let user = user.to_owned();
        self.blocking(move |store| store.read_positions(&user))
    }

    fn bans(&self) -> BoxFuture<'static, Result<Vec<Ban>, EngineError>> {
        self.blocking(|store| store.bans())
    }

    fn put_ban(&self, ban: Ban) -> BoxFuture<'static, Result<(), EngineError>> {
        self.blocking(move |store| store.put_ban(&ban))
    }

    fn remove_ban(&self, id: &str) -> BoxFuture<'static, Result<bool, EngineError>> {
        let id = id.to_owned();
        self.blocking(move |store| store.remove_ban(&id))
    }

    fn open_direct(&self, room: &RoomName) -> BoxFuture<'static, Result<(), EngineError>> {
        let room = room.clone();
        self.blocking(move |store| store.open_direct(&room))
    }

    fn directs(&self, user: &str) -> BoxFuture<'static, Result<Vec<RoomName>, EngineError>> {
        let user = user.to_owned();
        self.blocking(move |store| store.directs(&user))
    }

    fn room_stats(
        &self,
        room: &RoomName,
    ) -> BoxFuture<'static, Result<(RoomStats, Epoch), EngineError>> {
        let room = room.clone();
        self.blocking(move |store| Ok((store.room_stats(&room)?, store.epoch())))
    }

    fn authored(
        &self,
        user: &str,
        from: Option<Place>,
        limit: usize,
    ) -> BoxFuture<'static, Result<Authored, EngineError>> {
        let user = user.to_owned();
        self.blocking(move |store| store.authored(&user, from.as_ref(), limit))
    }

    fn history(&self, query: HistoryQuery) -> BoxFuture<'static, Result<Page, EngineError>> {
        let store = self.store.clone();
        let reads = self.reads.clone();
        async move {
            let _turn = reads
                .acquire_owned()
                .await
                .map_err(|_| EngineError::Stopped)?;
            tokio::task::spawn_blocking(move || store.page(&query))
                .await
                .map_err(|error| EngineError::Unavailable(error.to_string()))?
                .map_err(|error| EngineError::Unavailable(error.to_string()))
        }
        .boxed()
    }

    fn room_ready(&self, _room: &RoomName) -> BoxFuture<'static, Result<(), EngineError>> {
        // The hub is the only subscriber: a member is in the room as soon as it joined.
        std::future::ready(Ok(())).boxed()
    }

    fn presence(&self, room: &RoomName) -> BoxFuture<'static, Result<PresenceList, EngineError>> {
        std::future::ready(Ok(self.roster.list(room))).boxed()
    }

    fn typing(&self, room: &RoomName, user: Arc<Author>) {
        presence::deliver_typing(&self.roster, &self.hub, room, &user);
    }

    fn recent_rooms(
        &self,
        limit: usize,
    ) -> BoxFuture<'static, Result<Vec<RecentRoom>, EngineError>> {
        let store = self.store.clone();
        async move {
            tokio::task::spawn_blocking(move || store.recent_rooms(limit))
                .await
                .map_err(|error| EngineError::Unavailable(error.to_string()))?
                .map_err(|error| EngineError::Unavailable(error.to_string()))
        }
        .boxed()
    }

    fn rooms(&self) -> BoxFuture<'static, Result<Vec<RoomCount>, EngineError>> {
        let rooms = self
            .hub
            .room_counts()
            .into_iter()
            .map(|(room, members)| RoomCount {
                room,
                members: members as u64,
            })
            .collect();
        std::future::ready(Ok(rooms)).boxed()
    }

    fn readiness(&self) -> Result<(), EngineError> {
        if self.jobs.is_stopped() {
            return Err(EngineError::Stopped);
        }
        match &*self.failure.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(failure) => Err(EngineError::Unavailable(failure.reason.clone())),
            None => Ok(()),
        }
    }

    fn set_moderation(&self, moderation: Arc<dyn ModerationNews>) {
        let _ = self.moderation.set(moderation);
    }

    fn observe_stored(&self, observer: Arc<dyn StoredObserver>) {
        let _ = self.stored.set(observer);
    }

    fn outbox(&self) -> Option<Arc<dyn Outbox>> {
        self.store.outbox_budget()?;
        Some(Arc::new(StoreOutbox {
            store: self.store.clone(),
        }))
    }

    fn shutdown(&self) -> BoxFuture<'static, ()> {
        self.jobs.stop();
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        let store = self.store.clone();
        async move {
            if let Some(writer) = writer {
                let _ = tokio::task::spawn_blocking(move || writer.join()).await;
            }
            let closed = tokio::task::spawn_blocking(move || store.close()).await;
            if let Ok(Err(error)) = closed {
                tracing::warn!(%error, "could not fold the write-ahead log into the history file; SQLite will when it next opens it");
            }
        }
        .boxed()
    }
}

/// The store's webhook outbox, as the sender and the roster reach it: its calls run on the
/// blocking pool (the SQLite writer's lock serializes them with commits).
struct StoreOutbox {
    store: Arc<dyn HistoryStore>,
}

impl StoreOutbox {
    fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(&dyn HistoryStore) -> Result<T, crate::store::StoreError> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, OutboxError>> {
        let store = self.store.clone();
        async move {
            tokio::task::spawn_blocking(move || call(&*store))
                .await
                .map_err(|error| OutboxError(error.to_string()))?
                .map_err(|error| OutboxError(error.to_string()))
        }
        .boxed()
    }
}

impl Outbox for StoreOutbox {
    fn record(&self, events: Vec<Event>) -> BoxFuture<'static, Result<(), OutboxError>> {
        self.blocking(move |store| store.record_events(&events))
    }

    fn read(&self, max: usize) -> BoxFuture<'static, Result<Vec<Recorded>, OutboxError>> {
        self.blocking(move |store| store.read_events(max))
    }

    fn ack(&self, delivered: &[Recorded]) -> BoxFuture<'static, Result<(), OutboxError>> {
        let delivered = delivered.to_vec();
        self.blocking(move |store| store.forget_events(&delivered))
    }

    fn pending(&self) -> BoxFuture<'static, Result<u64, OutboxError>> {
        let pending = self
            .store
            .outbox_budget()
            .map_or(0, |budget| budget.events());
        std::future::ready(Ok(pending)).boxed()
    }

    fn dropped(&self) -> u64 {
        self.store
            .outbox_budget()
            .map_or(0, |budget| budget.dropped())
    }
}

struct Writer {
    store: Arc<dyn HistoryStore>,
    hub: Arc<Hub>,
    failure: Arc<Mutex<Option<Failure>>>,
    max_age: Option<Duration>,
    dedupe_window: Duration,
    /// How long authors may change their messages (`None`: always).
    edit_window: Option<Duration>,
    metrics: Arc<Metrics>,
    /// Told of each message stored, those from the Channels layer excepted.
    stored: ObserverSlot,
}

impl Writer {
    fn run(self, mut queued: QueueReceiver<Work>) {
        while let Some(batch) = queued.next_batch_blocking(MAX_BATCH) {
            if !batch.drafts.is_empty() {
                self.commit(batch.drafts, batch.answers);
            }
            let mut pruned = false;
            for work in batch.other {
                match work {
                    Work::Prune if !pruned => {
                        self.prune();
                        pruned = true;
                    }
                    Work::Prune => {}
                    Work::Probe => self.probe(),
                    Work::Change(change, answer) => {
                        let _ = answer.send(self.change(&change));
                    }
                }
            }
            if batch.stop {
                break;
            }
        }
    }

    fn commit(&self, drafts: Vec<Draft>, answers: Vec<Answer>) {
        let started = std::time::Instant::now();
        let count = drafts.len();
        let from_layer: Vec<bool> = drafts.iter().map(|draft| draft.from_layer).collect();
        let appended = self.store.append(drafts);
        self.metrics
            .store_commit_seconds
            .record(started.elapsed().as_secs_f64());
        self.metrics.store_batch_messages.record(count as f64);
        match appended {
            Ok(appended) => {
                self.succeeded();
                let epoch = self.store.epoch();
                let mut stored = Vec::with_capacity(appended.len());
                let mut accepted = Vec::with_capacity(appended.len());
                let observer = self.stored.get();
                for (outcome, from_layer) in appended.into_iter().zip(from_layer) {
                    accepted.push(match outcome {
                        Appended::Stored(message) => {
                            let receipt = Accepted::new(message.id, message.ts, epoch.clone());
                            if let Some(observer) = observer.filter(|_| !from_layer) {
                                observer.stored(&message);
                            }
                            stored.push(message);
                            Ok(receipt)
                        }
                        Appended::Duplicate(original) => {
                            Ok(Accepted::duplicate(original, epoch.clone()))
                        }
                        Appended::Refused(refused) => Err(EngineError::Refused(refused)),
                    });
                }
                self.hub.deliver(&stored);
                for (accepted, answer) in accepted.into_iter().zip(answers) {
                    let _ = answer.send(accepted);
                }
            }
            Err(error) => {
                let error = self.failed(&error);
                for answer in answers {
                    let _ = answer.send(Err(error.clone()));
                }
            }
        }
    }

    /// Makes a change, then tells the room's members with metadata.
    fn change(&self, change: &Change) -> Result<Result<Changed, ChangeRefused>, EngineError> {
        let made = self
            .store
            .change(change, self.edit_window)
            .map_err(|error| self.failed(&error))?;
        self.succeeded();
        if let Ok(changed) = &made {
            self.hub
                .announce(changed.room(), Audience::Meta, changed.frame());
        }
        Ok(made)
    }

    fn prune(&self) {
        let now = now_ms();
        let nonce_cutoff = now.saturating_sub(self.dedupe_window.as_millis() as u64);
        if let Err(error) = self.store.forget_nonces_before(nonce_cutoff) {
            tracing::warn!(%error, "forgetting old nonces failed");
        }
        let Some(max_age) = self.max_age else { return };
        let cutoff = now.saturating_sub(max_age.as_millis() as u64);
        match self.store.prune_older_than(cutoff) {
            Ok(0) => {}
            Ok(pruned) => tracing::debug!(pruned, "deleted messages past the maximum age"),
            Err(error) => tracing::warn!(%error, "pruning old messages failed"),
        }
    }

    /// Tries a small write while the store cannot write.
    fn probe(&self) {
        if !failing(&self.failure) {
            return;
        }
        match self.store.probe() {
            Ok(()) => self.succeeded(),
            Err(error) => {
                self.failed(&error);
            }
        }
    }

    /// Notes that the store failed to write (logged when the state changes, not per write);
    /// what the writer's callers are told.
    fn failed(&self, error: &StoreError) -> EngineError {
        let full = error.is_full();
        let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        if failure.as_ref().map(|failure| failure.full) != Some(full) {
            match full {
                true => tracing::error!(%error,
                    "storage full: the disk holding the history is full; publishes are refused until space is freed"),
                false => tracing::error!(%error,
                    "the history store cannot write; publishes are refused until it can"),
            }
        }
        self.metrics.store_full.set(if full { 1.0 } else { 0.0 });
        *failure = Some(Failure {
            reason: match full {
                true => format!(
                    "storage full: the disk holding the history is full ({error}); publishes are \
                     refused until space is freed"
                ),
                false => error.to_string(),
            },
            full,
            last: std::time::Instant::now(),
        });
        store_failed(error)
    }

    /// Notes a successful write: a failure before it is over once writes have not failed for
    /// `SETTLE`.
    fn succeeded(&self) {
        let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        if failure
            .as_ref()
            .is_some_and(|failure| failure.last.elapsed() >= SETTLE)
            && let Some(previous) = failure.take()
        {
            tracing::info!(was = %previous.reason, "the history store writes again: publishes accepted");
            self.metrics.store_full.set(0.0);
        }
    }
}
