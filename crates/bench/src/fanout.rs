//! `fanout`: R rooms x S subscribers, one publisher per room at a fixed rate. Measures
//! deliveries/s, loss, and publish-to-receive latency (each message carries its send time).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};
use std::sync::Mutex;

use tokio::sync::{Semaphore, watch};
use tokio_websockets::Message;

use crate::BenchError;
use crate::client::{Socket, Target, room_path};
use crate::report::{histogram, latency_json};

#[derive(Debug, Clone, clap::Args)]
pub struct Fanout {
    /// Rooms, each with its own publisher.
    #[arg(long, default_value_t = 10)]
    pub rooms: usize,
    /// Subscribers per room.
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// Messages per second published to each room.
    #[arg(long, default_value_t = 100)]
    pub rate: u32,
    /// Size of each message's JSON value in bytes (padded).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// How long to publish.
    #[arg(long, value_parser = crate::parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Longest wait, after the last publish, for deliveries still on their way.
    #[arg(long, value_parser = crate::parse_duration, default_value = "3s")]
    pub drain: Duration,
    /// Base URL the publishers connect to (another node, for cross-node fan-out); default: --url.
    #[arg(long)]
    pub publish_url: Option<String>,
    /// Room names are PREFIX0, PREFIX1, ...
    #[arg(long, default_value = "bench")]
    pub room_prefix: String,
}

/// Latency histograms are sharded so that subscribers rarely wait for each other's lock.
const HISTOGRAM_SHARDS: usize = 32;

struct Tally {
    received: AtomicU64,
    closed_early: AtomicU64,
    latency: Vec<Mutex<Histogram<u64>>>,
}

pub async fn run(
    fanout: Fanout,
    subscribe_to: Arc<Target>,
    publish_to: Arc<Target>,
    path: &str,
) -> Result<(Value, Map<String, Value>), BenchError> {
    let tally = Arc::new(Tally {
        received: AtomicU64::new(0),
        closed_early: AtomicU64::new(0),
        latency: (0..HISTOGRAM_SHARDS)
            .map(|_| Mutex::new(histogram()))
            .collect(),
    });
    let (stop, stopped) = watch::channel(false);
    let rooms: Vec<String> = (0..fanout.rooms)
        .map(|n| format!("{}{n}", fanout.room_prefix))
        .collect();

    let opening = Instant::now();
    let limit = Arc::new(Semaphore::new(256));
    let mut opened = Vec::new();
    for (index, room) in rooms
        .iter()
        .cycle()
        .take(rooms.len() * fanout.subscribers)
        .enumerate()
    {
        let (target, limit, path) = (subscribe_to.clone(), limit.clone(), room_path(path, room));
        opened.push(tokio::spawn(async move {
            let _permit = limit.acquire().await;
            target.websocket(&path).await.map(|socket| (index, socket))
        }));
    }
    let mut readers = Vec::new();
    // Subscribers connected per room: a server may refuse some handshakes under load.
    let mut members = vec![0u64; rooms.len()];
    let mut connect_failed = 0u64;
    for socket in opened {
        match socket.await.map_err(BenchError::from)? {
            Ok((index, socket)) => {
                members[index % rooms.len()] += 1;
                let stopped = stopped.clone();
                readers.push(tokio::spawn(subscribe(
                    socket,
                    index % HISTOGRAM_SHARDS,
                    tally.clone(),
                    stopped,
                )));
            }
            Err(_) => connect_failed += 1,
        }
    }
    let connect_seconds = opening.elapsed().as_secs_f64();

    let mut publishers = Vec::new();
    for room in &rooms {
        let socket = publish_to.websocket(&room_path(path, room)).await?;
        let (stop, size, rate, duration) =
            (stopped.clone(), fanout.size, fanout.rate, fanout.duration);
        publishers.push(tokio::spawn(async move {
            // The publisher is a member too: it reads (and drops) its own echoes meanwhile, and
            // keeps its socket open until the end (closing with unread data would reset it).
            let (mut sink, mut stream) = socket.split();
            let mut stop = stop;
            let reading = tokio::spawn(async move {
                loop {
                    tokio::select! {
                        next = stream.next() => if next.is_none() { break },
                        _ = stop.changed() => break,
                    }
                }
                stream
            });
            let sent = publish(&mut sink, rate, size, duration).await;
            (sent, sink, reading)
        }));
    }
    let started = Instant::now();
    let mut published = 0;
    let mut expected = 0;
    let mut open_publishers = Vec::new();
    for (room, publisher) in publishers.into_iter().enumerate() {
        let (sent, sink, reading) = publisher.await.map_err(BenchError::from)?;
        published += sent;
        expected += sent * members[room];
        open_publishers.push((sink, reading));
    }
    let publish_seconds = started.elapsed().as_secs_f64();
    let deadline = Instant::now() + fanout.drain;
    while tally.received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(true);
    for reader in readers {
        let _ = reader.await;
    }
    for (sink, reading) in open_publishers {
        if let Ok(stream) = reading.await {
            drop(stream.reunite(sink));
        }
    }

    let received = tally.received.load(Ordering::Relaxed);
    let mut latency = histogram();
    for shard in &tally.latency {
        let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
        latency
            .add(&*shard)
            .map_err(|e| BenchError::Report(e.to_string()))?;
    }
    let parameters = json!({
        "rooms": fanout.rooms, "subscribers": fanout.subscribers, "rate": fanout.rate,
        "size": fanout.size, "duration_s": fanout.duration.as_secs_f64(),
        "cross_node": fanout.publish_url.is_some(),
    });
    let mut results = Map::new();
    results.insert(
        "connections".into(),
        json!(rooms.len() * (fanout.subscribers + 1)),
    );
    results.insert("connect_s".into(), json!(connect_seconds));
    results.insert("connect_failed".into(), json!(connect_failed));
    results.insert("published".into(), json!(published));
    results.insert(
        "publish_rate".into(),
        json!(published as f64 / publish_seconds),
    );
    results.insert("expected_deliveries".into(), json!(expected));
    results.insert("deliveries".into(), json!(received));
    results.insert(
        "deliveries_per_s".into(),
        json!(received as f64 / publish_seconds),
    );
    results.insert("lost".into(), json!(expected.saturating_sub(received)));
    let loss = if expected == 0 {
        0.0
    } else {
        100.0 * expected.saturating_sub(received) as f64 / expected as f64
    };
    results.insert("loss_percent".into(), json!(loss));
    results.insert(
        "closed_early".into(),
        json!(tally.closed_early.load(Ordering::Relaxed)),
    );
    results.insert("latency".into(), latency_json(&latency));
    Ok((parameters, results))
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Sends `{"message":{"t":NANOS,"s":SEQ,"p":"..."}}` at `rate` per second; returns how many.
async fn publish<S>(sink: &mut S, rate: u32, size: usize, duration: Duration) -> u64
where
    S: futures_util::Sink<Message> + Unpin,
{
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let end = Instant::now() + duration;
    let padding = "x".repeat(size.saturating_sub(40));
    let mut sent = 0;
    while Instant::now() < end {
        ticks.tick().await;
        let frame = format!(
            r#"{{"message":{{"t":{},"s":{sent},"p":"{padding}"}}}}"#,
            now_nanos()
        );
        if sink.send(Message::text(frame)).await.is_err() {
            break;
        }
        sent += 1;
    }
    sent
}

/// Reads frames until told to stop, recording each message's latency.
async fn subscribe(
    mut socket: Socket,
    shard: usize,
    tally: Arc<Tally>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            next = socket.next() => match next {
                Some(Ok(message)) => {
                    if let Some(sent) = message.as_text().and_then(sent_at) {
                        let micros = now_nanos().saturating_sub(sent) / 1000;
                        let mut histogram = tally.latency[shard].lock().unwrap_or_else(|p| p.into_inner());
                        histogram.saturating_record(micros.max(1));
                        tally.received.fetch_add(1, Ordering::Relaxed);
                    }
                }
                _ => {
                    tally.closed_early.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            },
            _ = stop.changed() => break,
        }
    }
}

/// The send time in a frame `{"message":{"t":NANOS,...}}`, without parsing the whole frame.
fn sent_at(frame: &str) -> Option<u64> {
    let start = frame.find("\"t\":")? + 4;
    // Other servers may put spaces after the colon (Python's json.dumps does).
    let digits = frame[start..].trim_start();
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_send_time() {
        assert_eq!(
            super::sent_at(r#"{"message":{"t":123,"s":1,"p":"x"}}"#),
            Some(123)
        );
        assert_eq!(
            super::sent_at(r#"{"message": {"t": 45, "s": 1}}"#),
            Some(45)
        );
        assert_eq!(super::sent_at(r#"{"message":"other"}"#), None);
    }
}
