//! `idle`: opens and holds N connections; with the server's pid, reports its resident memory
//! per connection (VmRSS after opening them, minus before, divided by N).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tokio::sync::Semaphore;

use crate::BenchError;
use crate::client::{Target, room_path};

#[derive(Debug, Clone, clap::Args)]
pub struct Idle {
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// The connections are spread over this many rooms.
    #[arg(long, default_value_t = 100)]
    pub rooms: usize,
    /// How long to hold them once open, before measuring.
    #[arg(long, value_parser = crate::parse_duration, default_value = "3s")]
    pub hold: Duration,
    /// The server's process id, to read its resident memory from /proc.
    #[arg(long)]
    pub server_pid: Option<u32>,
    #[arg(long, default_value = "bench_idle")]
    pub room_prefix: String,
}

pub async fn run(
    options: Idle,
    target: Arc<Target>,
    path: &str,
) -> Result<(Value, Map<String, Value>), BenchError> {
    let before = options.server_pid.map(resident_bytes).transpose()?;
    let limit = Arc::new(Semaphore::new(256));
    let started = Instant::now();
    let mut opening = Vec::with_capacity(options.connections);
    for index in 0..options.connections {
        let path = room_path(
            path,
            &format!("{}{}", options.room_prefix, index % options.rooms.max(1)),
        );
        let (target, limit) = (target.clone(), limit.clone());
        opening.push(tokio::spawn(async move {
            let _permit = limit.acquire().await;
            target.websocket(&path).await
        }));
    }
    let mut held = Vec::with_capacity(options.connections);
    let mut failed = 0u64;
    for socket in opening {
        match socket.await.map_err(BenchError::from)? {
            Ok(socket) => held.push(socket),
            Err(_) => failed += 1,
        }
    }
    let open_seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(options.hold).await;
    let after = options.server_pid.map(resident_bytes).transpose()?;
    let parameters = json!({ "connections": options.connections, "rooms": options.rooms });
    let mut results = Map::new();
    results.insert("open".into(), json!(held.len()));
    results.insert("failed".into(), json!(failed));
    results.insert("open_s".into(), json!(open_seconds));
    if let (Some(before), Some(after)) = (before, after) {
        let per_connection = after.saturating_sub(before) as f64 / held.len().max(1) as f64;
        results.insert("server_rss_before_bytes".into(), json!(before));
        results.insert("server_rss_after_bytes".into(), json!(after));
        results.insert(
            "rss_per_connection_bytes".into(),
            json!(per_connection.round()),
        );
        results.insert(
            "rss_per_connection_kib".into(),
            json!((per_connection / 1024.0 * 100.0).round() / 100.0),
        );
    }
    drop(held);
    Ok((parameters, results))
}

/// VmRSS of a process, in bytes.
fn resident_bytes(pid: u32) -> Result<u64, BenchError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kib| kib * 1024)
        .ok_or_else(|| BenchError::Report(format!("no VmRSS for pid {pid}")))
}
