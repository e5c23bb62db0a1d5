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
use crate::deflate::Reader;
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
    let started = Instant::now();
    let opened = open(&nodes, slice, options.connections, |connection| {
        let room = connection % options.rooms.max(1);
        room_path(path, &format!("{}{room}", options.room_prefix))
            .replace("{index}", &connection.to_string())
    })
    .await?;
    let open_s = started.elapsed().as_secs_f64();
    // A worker holds its connections until the parent has measured.
    workers::start_line(slice).await?;
    if !slice.is_worker() {
        hold(options).await;
    }
    workers::end_line(slice);
    Ok(Raw {
        open: opened.sockets.len() as u64,
        failed: opened.failed,
        first_error: opened.first_error,
        open_s,
    })
}

/// Connections that are opened to be held.
pub struct Opened {
    pub sockets: Vec<Reader>,
    pub failed: u64,
    /// The first error of those that failed.
    pub first_error: Option<String>,
}

/// Opens this process's share of `total` connections, 256 at a time; connection number N (over
/// every process) goes to node N on `path_of(N)`.
pub async fn open(
    nodes: &Nodes,
    slice: Slice,
    total: usize,
    path_of: impl Fn(usize) -> String,
) -> Result<Opened, BenchError> {
    let limit = Arc::new(Semaphore::new(256));
    let mut opening = Vec::new();
    for index in 0..slice.share(total) {
        let connection = index * slice.count + slice.index;
        let (target, limit) = (nodes.for_connection(connection).clone(), limit.clone());
        let path = path_of(connection);
        opening.push(tokio::spawn(async move {
            let _permit = limit.acquire().await;
            target.reader(&path).await
        }));
    }
    let mut opened = Opened {
        sockets: Vec::new(),
        failed: 0,
        first_error: None,
    };
    for socket in opening {
        match socket.await? {
            Ok(socket) => opened.sockets.push(socket),
            Err(error) => {
                opened.failed += 1;
                opened.first_error.get_or_insert_with(|| error.to_string());
            }
        }
    }
    Ok(opened)
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
