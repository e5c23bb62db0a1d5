//! `connect`: WebSocket handshakes per second (open, then close), with some in flight at once.

use std::sync::Arc;
use std::time::Instant;

use futures_util::SinkExt;
use serde::{Deserialize, Serialize};
use serde_json::{Map, json};
use tokio::sync::Semaphore;
use tokio_websockets::Message;

use crate::BenchError;
use crate::client::{Target, room_path};
use crate::report::{Summary, export, failures, histogram, import, latency_json};
use crate::workers::{self, Slice};

#[derive(Debug, Clone, clap::Args)]
pub struct Connect {
    /// Handshakes in all.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    #[arg(long, default_value = "bench_connect")]
    pub room: String,
}

/// What one process measured.
#[derive(Serialize, Deserialize)]
pub struct Raw {
    latency: Vec<(u64, u64)>,
    failed: u64,
    first_error: Option<String>,
    seconds: f64,
}

pub async fn run(
    options: &Connect,
    target: Arc<Target>,
    path: &str,
    slice: Slice,
) -> Result<Raw, BenchError> {
    let path: Arc<str> = room_path(path, &options.room).into();
    let limit = Arc::new(Semaphore::new(slice.share(options.concurrency).max(1)));
    workers::start_line(slice).await?;
    let started = Instant::now();
    let mut handshakes = Vec::new();
    for _ in 0..slice.share(options.connections) {
        let permit = limit
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| BenchError::Report(e.to_string()))?;
        let (target, path) = (target.clone(), path.clone());
        handshakes.push(tokio::spawn(async move {
            let began = Instant::now();
            let mut socket = target.websocket(&path).await?;
            let took = began.elapsed();
            drop(permit);
            let _ = socket.send(Message::close(None, "")).await;
            Ok::<_, BenchError>(took)
        }));
    }
    let mut latency = histogram();
    let (mut failed, mut first_error) = (0, None);
    for handshake in handshakes {
        match handshake.await.map_err(BenchError::from)? {
            Ok(took) => latency.saturating_record((took.as_micros() as u64).max(1)),
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
        failed,
        first_error,
        seconds,
    })
}

pub fn report(options: &Connect, raws: &[Raw]) -> Summary {
    let mut latency = histogram();
    for raw in raws {
        import(&mut latency, &raw.latency);
    }
    let seconds = raws.iter().map(|raw| raw.seconds).fold(0.0, f64::max);
    let parameters = json!({
        "connections": options.connections, "concurrency": options.concurrency,
        "workers": raws.len(),
    });
    let mut results = Map::new();
    results.insert("handshakes".into(), json!(latency.len()));
    results.insert(
        "handshakes_per_s".into(),
        json!(latency.len() as f64 / seconds),
    );
    let failed: u64 = raws.iter().map(|raw| raw.failed).sum();
    results.insert("failed".into(), json!(failed));
    results.insert("latency".into(), latency_json(&latency));
    let first_error = raws.iter().find_map(|raw| raw.first_error.as_deref());
    let failure = (latency.is_empty())
        .then(|| format!("no handshake succeeded ({})", failures(failed, first_error)));
    Summary {
        parameters,
        results,
        failure,
    }
}
