//! `replay`: clients reconnecting at once with `?since=` (livechat's resume): the room is filled
//! with `messages` first (over WebSocket), then `clients` connect at the same moment resuming from
//! id 0, and each is timed from its connect to the `caught_up` event after the replay.

use std::sync::Arc;
use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Map, json};
use tokio::sync::Barrier;
use tokio_websockets::Message;

use crate::BenchError;
use crate::client::{Target, room_path};
use crate::report::{Summary, export, failures, histogram, import, latency_json};
use crate::workers::{self, Slice};

#[derive(Debug, Clone, clap::Args)]
pub struct Replay {
    /// Messages in the room before the clients reconnect.
    #[arg(long, default_value_t = 1000)]
    pub messages: usize,
    /// Clients reconnecting at once.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// Bytes of each message's text.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    #[arg(long, default_value = "bench_replay")]
    pub room: String,
}

#[derive(Serialize, Deserialize)]
pub struct Raw {
    latency: Vec<(u64, u64)>,
    replayed: u64,
    failed: u64,
    first_error: Option<String>,
    seconds: f64,
}

pub async fn run(
    options: &Replay,
    target: Arc<Target>,
    path: &str,
    slice: Slice,
) -> Result<Raw, BenchError> {
    let room_path = room_path(path, &options.room);
    if slice.index == 0 {
        fill(&target, &room_path, options).await?;
    }
    let clients = slice.share(options.clients);
    let resume = format!("{room_path}?since=0");
    let barrier = Arc::new(Barrier::new(clients));
    workers::start_line(slice).await?;
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let (target, resume, barrier) = (target.clone(), resume.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let began = Instant::now();
            let mut socket = target.websocket(&resume).await?;
            let mut replayed = 0u64;
            while let Some(frame) = socket.next().await {
                let frame = frame?;
                let Some(text) = frame.as_text() else {
                    continue;
                };
                if text.starts_with("{\"event\":\"caught_up\"") {
                    return Ok::<_, BenchError>((began.elapsed(), replayed));
                }
                replayed += 1;
            }
            Err(BenchError::Report("closed before caught_up".into()))
        }));
    }
    let (mut latency, mut replayed, mut failed, mut first_error) = (histogram(), 0, 0, None);
    for task in tasks {
        match task.await? {
            Ok((took, count)) => {
                latency.saturating_record((took.as_micros() as u64).max(1));
                replayed += count;
            }
            Err(error) => {
                failed += 1;
                first_error.get_or_insert_with(|| error.to_string());
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    workers::end_line(slice);
    Ok(Raw {
        latency: export(&latency),
        replayed,
        failed,
        first_error,
        seconds,
    })
}

/// Publishes the room's messages and waits until their echo is back (all stored).
async fn fill(target: &Target, path: &str, options: &Replay) -> Result<(), BenchError> {
    let mut socket = target.websocket(path).await?;
    let text = "x".repeat(options.size);
    for n in 0..options.messages {
        let frame = json!({"message": {"n": n, "text": text}}).to_string();
        socket.send(Message::text(frame)).await?;
    }
    let mut echoed = 0;
    while echoed < options.messages {
        match socket.next().await {
            Some(frame) => echoed += usize::from(frame?.is_text()),
            None => return Err(BenchError::Report("closed while filling the room".into())),
        }
    }
    Ok(())
}

pub fn report(options: &Replay, raws: &[Raw]) -> Summary {
    let mut latency = histogram();
    for raw in raws {
        import(&mut latency, &raw.latency);
    }
    let seconds = raws.iter().map(|raw| raw.seconds).fold(0.0, f64::max);
    let replayed: u64 = raws.iter().map(|raw| raw.replayed).sum();
    let parameters = json!({
        "messages": options.messages, "clients": options.clients, "size": options.size,
        "workers": raws.len(),
    });
    let mut results = Map::new();
    results.insert("all_caught_up_s".into(), json!(seconds));
    results.insert("replayed".into(), json!(replayed));
    results.insert(
        "replayed_per_s".into(),
        json!(replayed as f64 / seconds.max(1e-9)),
    );
    let failed: u64 = raws.iter().map(|raw| raw.failed).sum();
    results.insert("failed".into(), json!(failed));
    results.insert("latency".into(), latency_json(&latency));
    let first_error = raws.iter().find_map(|raw| raw.first_error.as_deref());
    let failure = latency
        .is_empty()
        .then(|| format!("no client caught up ({})", failures(failed, first_error)));
    Summary {
        parameters,
        results,
        failure,
    }
}
