//! `connect`: WebSocket handshakes per second (open, then close), with some in flight at once.

use std::sync::Arc;
use std::time::Instant;

use futures_util::SinkExt;
use serde_json::{Map, Value, json};
use tokio::sync::Semaphore;
use tokio_websockets::Message;

use crate::BenchError;
use crate::client::{Target, room_path};
use crate::report::{histogram, latency_json};

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

pub async fn run(
    options: Connect,
    target: Arc<Target>,
    path: &str,
) -> Result<(Value, Map<String, Value>), BenchError> {
    let path: Arc<str> = room_path(path, &options.room).into();
    let limit = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let started = Instant::now();
    let mut handshakes = Vec::with_capacity(options.connections);
    for _ in 0..options.connections {
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
    let mut failed = 0u64;
    for handshake in handshakes {
        match handshake.await.map_err(BenchError::from)? {
            Ok(took) => latency.saturating_record((took.as_micros() as u64).max(1)),
            Err(_) => failed += 1,
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let parameters =
        json!({ "connections": options.connections, "concurrency": options.concurrency });
    let mut results = Map::new();
    results.insert("handshakes".into(), json!(latency.len()));
    results.insert(
        "handshakes_per_s".into(),
        json!(latency.len() as f64 / seconds),
    );
    results.insert("failed".into(), json!(failed));
    results.insert("latency".into(), latency_json(&latency));
    Ok((parameters, results))
}
