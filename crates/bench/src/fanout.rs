//! `fanout`: R rooms x S subscribers, one publisher per room at a fixed rate. Measures
//! deliveries/s, loss, and publish-to-receive latency (each message carries its send time).
//! Given several `--url`s (nodes on one Redis), each room's subscribers are spread over all of
//! them; `--idle-connections` adds a crowd the servers carry through the run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::{Map, json};
use std::sync::Mutex;

use tokio::sync::{Semaphore, watch};
use tokio_websockets::Message;

use crate::client::{Nodes, Socket, Target, room_path};
use crate::deflate::Reader;
use crate::report::{Summary, export, failures, histogram, import, latency_json};
use crate::workers::{self, Slice};
use crate::{BenchError, idle};

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
    /// Further connections, opened first and held (read, never written) through the run, in
    /// rooms of their own (PREFIX_idle0, ...), spread over the servers like the subscribers.
    #[arg(long, default_value_t = 0)]
    pub idle_connections: usize,
    /// Rooms the idle connections are spread over.
    #[arg(long, default_value_t = 1000)]
    pub idle_rooms: usize,
}

/// Latency histograms are sharded so that subscribers rarely wait for each other's lock.
const HISTOGRAM_SHARDS: usize = 32;

struct Tally {
    received: AtomicU64,
    closed_early: AtomicU64,
    idle_closed_early: AtomicU64,
    latency: Vec<Mutex<Histogram<u64>>>,
}

/// What one process measured. Per room: messages its publishers sent, subscribers it connected.
#[derive(Serialize, Deserialize)]
pub struct Raw {
    published: Vec<u64>,
    members: Vec<u64>,
    received: u64,
    closed_early: u64,
    idle_open: u64,
    idle_closed_early: u64,
    connect_failed: u64,
    publishers_failed: u64,
    /// The first error of a subscriber's connection, and of a publisher's.
    first_error: Option<String>,
    publisher_error: Option<String>,
    latency: Vec<(u64, u64)>,
    connect_s: f64,
    publish_s: f64,
}

/// An open publisher: the sending half, and the task reading (and dropping) its echoes.
type Publisher = (
    SplitSink<Socket, Message>,
    tokio::task::JoinHandle<SplitStream<Socket>>,
);

pub async fn run(
    fanout: &Fanout,
    subscribe_to: Arc<Nodes>,
    publish_to: Arc<Target>,
    path: &str,
    slice: Slice,
) -> Result<Raw, BenchError> {
    let tally = Arc::new(Tally {
        received: AtomicU64::new(0),
        closed_early: AtomicU64::new(0),
        idle_closed_early: AtomicU64::new(0),
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
    let idle = idle::open(
        &subscribe_to,
        slice,
        fanout.idle_connections,
        |connection| {
            let room = connection % fanout.idle_rooms.max(1);
            room_path(path, &format!("{}_idle{room}", fanout.room_prefix))
        },
    )
    .await?;
    let mut idle_readers = Vec::new();
    for socket in idle.sockets {
        idle_readers.push(tokio::spawn(hold_idle(
            socket,
            tally.clone(),
            stopped.clone(),
        )));
    }
    let idle_open = idle_readers.len() as u64;
    let mut opened = Vec::new();
    let per_room = slice.share(fanout.subscribers);
    for (index, room) in rooms
        .iter()
        .cycle()
        .take(rooms.len() * per_room)
        .enumerate()
    {
        // The member's number in its room over every process: which server it joins.
        let member = index / rooms.len() * slice.count + slice.index;
        let target = subscribe_to.for_connection(member).clone();
        let (limit, path) = (limit.clone(), room_path(path, room));
        opened.push(tokio::spawn(async move {
            let _permit = limit.acquire().await;
            target.reader(&path).await.map(|socket| (index, socket))
        }));
    }
    let mut readers = Vec::new();
    // Subscribers connected per room: a server may refuse some handshakes under load.
    let mut members = vec![0u64; rooms.len()];
    let (mut connect_failed, mut first_error) = (idle.failed, idle.first_error);
    for socket in opened {
        match socket.await.map_err(BenchError::from)? {
            Ok((index, socket)) => {
                members[index % rooms.len()] += 1;
                let shard = index % HISTOGRAM_SHARDS;
                readers.push(tokio::spawn(subscribe(
                    socket,
                    shard,
                    tally.clone(),
                    stopped.clone(),
                )));
            }
            Err(error) => {
                connect_failed += 1;
                first_error.get_or_insert_with(|| error.to_string());
            }
        }
    }
    let connect_s = opening.elapsed().as_secs_f64();

    // The publishers (one per room, in the leading slice) are members too: they read and drop
    // their echoes, and stay open to the end (closing with unread data would reset them).
    // A room whose publisher cannot connect gets nothing published (and is counted).
    let mut publishers: Vec<(usize, Publisher)> = Vec::new();
    let (mut publishers_failed, mut publisher_error) = (0, None);
    if slice.leads() {
        for (index, room) in rooms.iter().enumerate() {
            let socket = match publish_to.websocket(&room_path(path, room)).await {
                Ok(socket) => socket,
                Err(error) => {
                    publishers_failed += 1;
                    publisher_error.get_or_insert_with(|| error.to_string());
                    continue;
                }
            };
            let (sink, mut stream) = socket.split();
            let mut stop = stopped.clone();
            let reading = tokio::spawn(async move {
                loop {
                    tokio::select! {
                        next = stream.next() => if next.is_none() { break },
                        _ = stop.changed() => break,
                    }
                }
                stream
            });
            publishers.push((index, (sink, reading)));
        }
    }

    workers::start_line(slice).await?;
    let started = Instant::now();
    let sending: Vec<_> = publishers
        .into_iter()
        .map(|(room, (mut sink, reading))| {
            let (rate, size, duration) = (fanout.rate, fanout.size, fanout.duration);
            tokio::spawn(async move {
                let sent = publish(&mut sink, rate, size, duration).await;
                (room, sent, sink, reading)
            })
        })
        .collect();
    let mut published = vec![0u64; rooms.len()];
    let mut open_publishers = Vec::new();
    for publisher in sending {
        let (room, sent, sink, reading) = publisher.await.map_err(BenchError::from)?;
        published[room] = sent;
        open_publishers.push((sink, reading));
    }
    if slice.is_worker() {
        // Other processes' counts are unknown here: wait the whole publishing and drain time.
        tokio::time::sleep_until((started + fanout.duration + fanout.drain).into()).await;
    } else {
        let expected: u64 = published
            .iter()
            .zip(&members)
            .map(|(sent, members)| sent * members)
            .sum();
        let deadline = Instant::now() + fanout.drain;
        while tally.received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    workers::end_line(slice);
    let publish_s = if slice.leads() {
        fanout.duration.as_secs_f64()
    } else {
        0.0
    };
    let _ = stop.send(true);
    for reader in readers.into_iter().chain(idle_readers) {
        let _ = reader.await;
    }
    for (sink, reading) in open_publishers {
        if let Ok(stream) = reading.await {
            drop(stream.reunite(sink));
        }
    }

    let mut latency = histogram();
    for shard in &tally.latency {
        let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
        latency
            .add(&*shard)
            .map_err(|e| BenchError::Report(e.to_string()))?;
    }
    Ok(Raw {
        published,
        members,
        received: tally.received.load(Ordering::Relaxed),
        closed_early: tally.closed_early.load(Ordering::Relaxed),
        idle_open,
        idle_closed_early: tally.idle_closed_early.load(Ordering::Relaxed),
        connect_failed,
        publishers_failed,
        first_error,
        publisher_error,
        latency: export(&latency),
        connect_s,
        publish_s,
    })
}

pub fn report(fanout: &Fanout, raws: &[Raw]) -> Summary {
    let rooms = fanout.rooms;
    let sum_rooms = |pick: fn(&Raw) -> &Vec<u64>| -> Vec<u64> {
        (0..rooms)
            .map(|room| raws.iter().map(|raw| pick(raw)[room]).sum())
            .collect()
    };
    let published = sum_rooms(|raw| &raw.published);
    let members = sum_rooms(|raw| &raw.members);
    let expected: u64 = published
        .iter()
        .zip(&members)
        .map(|(sent, members)| sent * members)
        .sum();
    let received: u64 = raws.iter().map(|raw| raw.received).sum();
    let total_published: u64 = published.iter().sum();
    let publish_s = raws
        .iter()
        .map(|raw| raw.publish_s)
        .fold(0.0, f64::max)
        .max(f64::EPSILON);
    let mut latency = histogram();
    for raw in raws {
        import(&mut latency, &raw.latency);
    }
    let parameters = json!({
        "rooms": fanout.rooms, "subscribers": fanout.subscribers, "rate": fanout.rate,
        "size": fanout.size, "duration_s": fanout.duration.as_secs_f64(),
        "cross_node": fanout.publish_url.is_some(), "workers": raws.len(),
        "idle_connections": fanout.idle_connections,
    });
    let lost = expected.saturating_sub(received);
    let publishers_failed: u64 = raws.iter().map(|raw| raw.publishers_failed).sum();
    let mut results = Map::new();
    let idle_open: u64 = raws.iter().map(|raw| raw.idle_open).sum();
    results.insert(
        "connections".into(),
        json!(members.iter().sum::<u64>() + rooms as u64 - publishers_failed + idle_open),
    );
    results.insert("idle_open".into(), json!(idle_open));
    results.insert(
        "idle_closed_early".into(),
        json!(raws.iter().map(|raw| raw.idle_closed_early).sum::<u64>()),
    );
    results.insert(
        "connect_s".into(),
        json!(raws.iter().map(|raw| raw.connect_s).fold(0.0, f64::max)),
    );
    let connect_failed: u64 = raws.iter().map(|raw| raw.connect_failed).sum();
    results.insert("connect_failed".into(), json!(connect_failed));
    results.insert("publishers_failed".into(), json!(publishers_failed));
    results.insert("published".into(), json!(total_published));
    results.insert(
        "publish_rate".into(),
        json!(total_published as f64 / publish_s),
    );
    results.insert("expected_deliveries".into(), json!(expected));
    results.insert("deliveries".into(), json!(received));
    results.insert(
        "deliveries_per_s".into(),
        json!(received as f64 / publish_s),
    );
    results.insert("lost".into(), json!(lost));
    let loss = if expected == 0 {
        0.0
    } else {
        100.0 * lost as f64 / expected as f64
    };
    results.insert("loss_percent".into(), json!(loss));
    results.insert(
        "closed_early".into(),
        json!(raws.iter().map(|raw| raw.closed_early).sum::<u64>()),
    );
    results.insert("latency".into(), latency_json(&latency));
    let subscribers: u64 = members.iter().sum();
    let failure = if subscribers == 0 {
        let first_error = raws.iter().find_map(|raw| raw.first_error.as_deref());
        Some(format!(
            "no subscriber connected ({})",
            failures(connect_failed, first_error)
        ))
    } else if total_published == 0 {
        let first_error = raws.iter().find_map(|raw| raw.publisher_error.as_deref());
        Some(format!(
            "nothing was published (publishers: {})",
            failures(publishers_failed, first_error)
        ))
    } else if received == 0 {
        Some(format!(
            "nothing was received ({total_published} messages published to {subscribers} subscribers)"
        ))
    } else {
        None
    };
    Summary {
        parameters,
        results,
        failure,
    }
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Sends `{"message":{"t":NANOS,"s":SEQ,"p":"..."}}` at `rate` per second; returns how many.
/// The padding is text made of common words, a different stretch for each message, so that a
/// compressing server sees what chat text gives it (a run of one letter would compress to
/// nothing).
async fn publish<S>(sink: &mut S, rate: u32, size: usize, duration: Duration) -> u64
where
    S: futures_util::Sink<Message> + Unpin,
{
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let end = Instant::now() + duration;
    let padding_len = size.saturating_sub(40);
    let corpus = chat_text(padding_len + 8192);
    let mut sent = 0;
    while Instant::now() < end {
        ticks.tick().await;
        let start = (sent as usize * 101) % 8192;
        let padding = &corpus[start..start + padding_len];
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

/// `len` bytes of words drawn from a small vocabulary (ASCII, no quotes), the same every run.
fn chat_text(len: usize) -> String {
    const WORDS: [&str; 48] = [
        "the", "meeting", "is", "moved", "to", "three", "o'clock", "can", "you", "join", "we",
        "need", "a", "review", "of", "this", "before", "release", "thanks", "sure", "I", "will",
        "check", "and", "get", "back", "later", "today", "looks", "good", "me", "ship", "it",
        "after", "lunch", "who", "owns", "build", "broken", "again", "fixed", "now", "please",
        "merge", "branch", "when", "ready", "ok",
    ];
    let (mut text, mut state) = (String::with_capacity(len + 16), 0x2545_F491_4F6C_DD1Du64);
    while text.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        text.push_str(WORDS[(state % WORDS.len() as u64) as usize]);
        text.push(if state % 11 == 0 { ',' } else { ' ' });
    }
    text.truncate(len);
    text
}

/// Reads frames until told to stop, recording each message's latency. Samples are kept locally
/// and handed to the shared tally whenever the socket has nothing more ready, so the shared
/// counter and histogram locks are touched once per burst, not once per frame.
async fn subscribe(
    mut socket: Reader,
    shard: usize,
    tally: Arc<Tally>,
    mut stop: watch::Receiver<bool>,
) {
    let mut samples: Vec<u64> = Vec::new();
    let flush = |samples: &mut Vec<u64>| {
        if samples.is_empty() {
            return;
        }
        let mut histogram = tally.latency[shard]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for &micros in samples.iter() {
            histogram.saturating_record(micros.max(1));
        }
        drop(histogram);
        tally
            .received
            .fetch_add(samples.len() as u64, Ordering::Relaxed);
        samples.clear();
    };
    // Created once: a fresh `changed()` future per frame costs more than reading the frame.
    let stopped = stop.changed();
    tokio::pin!(stopped);
    loop {
        let next = match socket.next().now_or_never() {
            Some(next) => next,
            None => {
                flush(&mut samples);
                tokio::select! {
                    biased;
                    _ = &mut stopped => break,
                    next = socket.next() => next,
                }
            }
        };
        match next {
            Some(Ok(message)) => {
                if let Some(sent) = message.as_text().and_then(sent_at) {
                    samples.push(now_nanos().saturating_sub(sent) / 1000);
                }
            }
            _ => {
                tally.closed_early.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
    }
    flush(&mut samples);
}

/// Holds an idle connection until told to stop, reading (so that the server's pings are
/// answered) and counting it if the server closes it first.
async fn hold_idle(mut socket: Reader, tally: Arc<Tally>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            next = socket.next() => if !matches!(next, Some(Ok(_))) { break },
        }
    }
    tally.idle_closed_early.fetch_add(1, Ordering::Relaxed);
}

/// The send time in a frame `{"message":{"t":NANOS,...}}`, without parsing the whole frame.
fn sent_at(frame: &str) -> Option<u64> {
    // A plain scan: the key sits near the start, and `str::find` builds a searcher per call.
    let start = frame.as_bytes().windows(4).position(|w| w == b"\"t\":")? + 4;
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
