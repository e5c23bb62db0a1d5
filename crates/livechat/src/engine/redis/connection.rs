//! One Redis connection (RESP3) for commands and pub/sub, to a single server, a cluster, or the
//! master Redis Sentinel names (see `link`, which also replaces a connection that stalls). All
//! reconnect by themselves and subscribe again to every channel after a reconnect; pushed
//! messages and disconnection notices go to the bounded queue given at `open`: when it is full
//! they are dropped and the queue says it overflowed, so that the subscriber reads what it missed
//! from the streams instead of Redis' pushes piling up in memory. Disconnection notices are
//! numbered as they are sent (their data is the number), so that the subscriber can tell one
//! sent before its last catch-up (which that catch-up covered) from news.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, ProtocolVersion, PushInfo, RedisFuture, RedisResult, Value};
use tokio::sync::mpsc;

use super::link::Link;
use crate::tasks::Tasks;

#[derive(Clone)]
pub enum Connection {
    /// One server, or the master the sentinels name (followed after a failover).
    Server(Arc<Link>),
    /// Sharded pub/sub: SPUBLISH and SSUBSCRIBE, routed to the node that owns the room's slot.
    Cluster(ClusterConnection),
}

/// Where Redis is.
pub enum Servers<'a> {
    /// One server (the first URL) or, with `cluster`, the cluster's nodes.
    Urls { urls: &'a [String], cluster: bool },
    /// The sentinels (`host:port` or URLs) and the name of the master they watch.
    Sentinel {
        sentinels: &'a [String],
        master: &'a str,
    },
}

impl Connection {
    /// Connects lazily to a single server (so a node starts while Redis is down), or eagerly to
    /// a cluster (whose slot map must be read first).
    pub async fn open(
        servers: Servers<'_>,
        timeout: Duration,
        pushes: PushQueue,
        tasks: &Tasks,
    ) -> RedisResult<Self> {
        let config = ConnectionManagerConfig::new()
            .set_push_sender(pushes.clone())
            .set_automatic_resubscription()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let (urls, cluster) = match servers {
            Servers::Urls { urls, cluster } => (urls, cluster),
            Servers::Sentinel { sentinels, master } => {
                let link = Link::sentinel(sentinels, master, config, pushes, tasks.clone()).await?;
                return Ok(Self::Server(link));
            }
        };
        if cluster {
            let client = ClusterClientBuilder::new(urls.to_vec())
                .use_protocol(ProtocolVersion::RESP3)
                .push_sender(pushes)
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .retries(1)
                .build()?;
            return Ok(Self::Cluster(client.get_async_connection().await?));
        }
        let url = urls
            .first()
            .map(String::as_str)
            .unwrap_or("redis://127.0.0.1/");
        let separator = if url.contains('?') { '&' } else { '?' };
        let client = redis::Client::open(format!("{url}{separator}protocol=resp3"))?;
        Ok(Self::Server(Link::server(
            client,
            config,
            pushes,
            tasks.clone(),
        )?))
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// The command that publishes to a room's channel, inside the publish script.
    pub fn publish_command(&self) -> &'static str {
        match self {
            Self::Server(_) => "PUBLISH",
            Self::Cluster(_) => "SPUBLISH",
        }
    }

    /// Subscribes to every channel: one SUBSCRIBE on a single server; on a cluster one
    /// SSUBSCRIBE per channel (each goes to its slot's node), all in flight at once.
    pub async fn subscribe(&mut self, channels: &[String]) -> RedisResult<()> {
        match self {
            Self::Server(link) => link.current().connection.subscribe(channels).await,
            Self::Cluster(connection) => {
                let each = channels.iter().map(|channel| {
                    let mut connection = connection.clone();
                    async move { connection.ssubscribe(channel).await }
                });
                futures_util::future::try_join_all(each).await.map(|_| ())
            }
        }
    }

    pub async fn unsubscribe(&mut self, channel: &str) -> RedisResult<()> {
        match self {
            Self::Server(link) => link.current().connection.unsubscribe(channel).await,
            Self::Cluster(connection) => connection.sunsubscribe(channel).await,
        }
    }
}

/// Pushes waiting for the subscriber, at most `capacity`; past it one is dropped and `overflowed`
/// is set.
#[derive(Clone)]
pub struct PushQueue {
    sender: mpsc::Sender<PushInfo>,
    overflowed: Arc<AtomicBool>,
    notices: Arc<AtomicU64>,
}

/// The receiving end of a `PushQueue`, for the subscriber.
pub struct Pushed {
    pub queue: mpsc::Receiver<PushInfo>,
    /// Set when a push was dropped because the queue was full.
    pub overflowed: Arc<AtomicBool>,
    /// Disconnection notices sent so far (dropped ones included); each notice carries its number.
    pub notices: Arc<AtomicU64>,
}

impl PushQueue {
    pub fn new(capacity: usize) -> (Self, Pushed) {
        let (sender, queue) = mpsc::channel(capacity);
        let (overflowed, notices) = (Arc::default(), Arc::default());
        let pushes = Self {
            sender,
            overflowed: Arc::clone(&overflowed),
            notices: Arc::clone(&notices),
        };
        let pushed = Pushed {
            queue,
            overflowed,
            notices,
        };
        (pushes, pushed)
    }

    /// The number a disconnection notice carries (see `PushQueue::send`).
    pub fn notice_number(notice: &PushInfo) -> Option<u64> {
        match notice.data.as_slice() {
            [Value::Int(number)] => u64::try_from(*number).ok(),
            _ => None,
        }
    }
}

impl redis::aio::AsyncPushSender for PushQueue {
    fn send(&self, mut info: PushInfo) -> Result<(), redis::aio::SendError> {
        if info.kind == redis::PushKind::Disconnection {
            // Counted before it is queued: whoever reads the count afterwards knows the
            // connection it was about had been replaced (or lost) by then.
            let number = self.notices.fetch_add(1, Ordering::AcqRel) + 1;
            info.data = vec![Value::Int(number as i64)];
        }
        if let Err(mpsc::error::TrySendError::Full(_)) = self.sender.try_send(info) {
            self.overflowed.store(true, Ordering::Release);
        }
        Ok(())
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Cluster(connection) => connection.req_packed_command(cmd),
            Self::Server(link) => {
                let link = link.clone();
                Box::pin(async move {
                    let mut used = link.current();
                    let answer = used.connection.req_packed_command(cmd).await;
                    if let Err(error) = &answer {
                        link.failed(&used, error);
                    }
                    answer
                })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
            Self::Server(link) => {
                let link = link.clone();
                Box::pin(async move {
                    let mut used = link.current();
                    let answer = used
                        .connection
                        .req_packed_commands(pipeline, offset, count)
                        .await;
                    if let Err(error) = &answer {
                        link.failed(&used, error);
                    }
                    answer
                })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Server(link) => link.current().connection.get_db(),
            Self::Cluster(connection) => connection.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use redis::aio::AsyncPushSender;
    use redis::{PushInfo, PushKind};

    use super::*;

    #[test]
    fn a_full_push_queue_drops_and_says_so() {
        let (queue, pushed) = PushQueue::new(1);
        let (mut received, overflowed) = (pushed.queue, pushed.overflowed);
        let push = || PushInfo {
            kind: PushKind::Message,
            data: Vec::new(),
        };
        assert!(queue.send(push()).is_ok());
        assert!(!overflowed.load(Ordering::Acquire));
        assert!(queue.send(push()).is_ok(), "never blocks the connection");
        assert!(overflowed.load(Ordering::Acquire));
        assert!(received.try_recv().is_ok());
        assert!(received.try_recv().is_err(), "the second was dropped");
    }

    #[test]
    fn disconnection_notices_are_numbered_as_sent() {
        let (queue, mut pushed) = PushQueue::new(1);
        let notice = || PushInfo {
            kind: PushKind::Disconnection,
            data: Vec::new(),
        };
        assert!(queue.send(notice()).is_ok());
        assert!(queue.send(notice()).is_ok(), "dropped, still counted");
        assert!(queue.send(notice()).is_ok());
        assert_eq!(pushed.notices.load(Ordering::Acquire), 3);
        let first = pushed.queue.try_recv().expect("the first notice");
        assert_eq!(PushQueue::notice_number(&first), Some(1));
        assert!(pushed.overflowed.load(Ordering::Acquire));
    }
}
