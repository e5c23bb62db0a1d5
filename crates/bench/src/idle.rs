//! `idle`: opens and holds N connections; with the server's pid, reports its resident memory
//! per connection (VmRSS once they have been open for `--hold`, minus VmRSS before, divided by N;
//! with several servers, summed over them).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, json};
use tokio::sync::Semaphore;

use crate::BenchError;
use crate::client::{Nodes, room_path};
use crate::cpu;
use crate::report::{Summary, failures};
use crate::workers::{self, Slice};

#[derive(Debug, Clone, clap::Args)]
pub struct Idle {
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// The connections are spread over this many rooms.
    #[arg(long, default_value_t = 100)]
    pub rooms: usize,
    /// How long to hold them once open, before measuring (with --server-pid, the server's
    /// resident memory per connection).
    #[arg(long, value_parser = crate::parse_duration, default_value = "3s")]
    pub hold: Duration,
    #[arg(long, default_value = "bench_idle")]
    pub room_prefix: String,
}

/// What one process measured.
#[derive(Serialize, Deserialize)]
pub struct Raw {
    open: u64,
    failed: u64,
    first_error: Option<String>,
    open_s: f64,
}

pub async fn run(
    options: &Idle,
    nodes: Arc<Nodes>,
    path: &str,
    slice: Slice,
) -> Result<Raw, BenchError> {
    let limit = Arc::new(Semaphore::new(256));
    let started = Instant::now();
    let mut opening = Vec::new();
    for index in 0..slice.share(options.connections) {
        let connection = index * slice.count + slice.index;
        let room = connection % options.rooms.max(1);
        let path = room_path(path, &format!("{}{room}", options.room_prefix))
            .replace("{index}", &connection.to_string());
        let (target, limit) = (nodes.for_connection(connection).clone(), limit.clone());
        opening.push(tokio::spawn(async move {
            let _permit = limit.acquire().await;
            target.websocket(&path).await
        }));
    }
    let mut held = Vec::new();
    let (mut failed, mut first_error) = (0, None);
    for socket in opening {
        match socket.await.map_err(BenchError::from)? {
            Ok(socket) => held.push(socket),
            Err(error) => {
                failed += 1;
                first_error.get_or_insert_with(|| error.to_string());
            }
        }
    }
    let open_s = started.elapsed().as_secs_f64();
    // A worker holds its connections until the parent has measured.
    workers::start_line(slice).await?;
    if !slice.is_worker() {
        hold(options).await;
    }
    workers::end_line(slice);
    Ok(Raw {
        open: held.len() as u64,
        failed,
        first_error,
        open_s,
    })
}

/// Once every connection is open (in every worker): waits `--hold`, then reads the servers' memory.
pub async fn hold(options: &Idle) {
    tokio::time::sleep(options.hold).await;
    cpu::sample_memory();
}

pub fn report(options: &Idle, raws: &[Raw]) -> Summary {
    let open: u64 = raws.iter().map(|raw| raw.open).sum();
    let parameters = json!({
        "connections": options.connections, "rooms": options.rooms, "workers": raws.len(),
    });
    let mut results = Map::new();
    results.insert("open".into(), json!(open));
    let failed: u64 = raws.iter().map(|raw| raw.failed).sum();
    results.insert("failed".into(), json!(failed));
    results.insert(
        "open_s".into(),
        json!(raws.iter().map(|raw| raw.open_s).fold(0.0, f64::max)),
    );
    let first_error = raws.iter().find_map(|raw| raw.first_error.as_deref());
    let failure =
        (open == 0).then(|| format!("no connection opened ({})", failures(failed, first_error)));
    Summary {
        parameters,
        results,
        failure,
    }
}
