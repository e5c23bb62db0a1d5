//! livechat-bench: load for any server that speaks the seed's live chat protocol (WebSocket rooms
//! at a path template, `{"message": X}` frames, `POST /chat/send/`).
//!
//! Each scenario prints a short summary for people, then one JSON line for scripts.

mod client;
mod connect;
mod fanout;
mod http_publish;
mod idle;
mod report;
mod workers;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::client::Target;
use crate::workers::Slice;

#[derive(Debug, Parser)]
#[command(name = "livechat-bench", version, about)]
struct Cli {
    /// Base URL of the server.
    #[arg(long, global = true, default_value = "http://127.0.0.1:8003")]
    url: String,
    /// WebSocket path template; `{room}` is replaced by the room name.
    #[arg(long, global = true, default_value = "/ws/chat/{room}/")]
    path: String,
    /// Local addresses to open connections from, round-robin (e.g. 127.0.0.1,127.0.0.2): one
    /// source address reaches about 28,000 connections to one port.
    #[arg(long, global = true, value_delimiter = ',')]
    source_ips: Vec<IpAddr>,
    /// Load processes to spread the connections over (one process holds about 19,900 here).
    #[arg(long, global = true, default_value_t = 1)]
    workers: usize,
    /// Set by the parent on each worker process: which slice of the work it takes.
    #[arg(long, global = true, hide = true)]
    worker_slice: Option<usize>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Rooms x subscribers, one publisher per room at a fixed rate: deliveries/s, loss, latency.
    Fanout(fanout::Fanout),
    /// Hold N connections; with --server-pid, the server's resident memory per connection.
    Idle(idle::Idle),
    /// WebSocket handshakes per second.
    Connect(connect::Connect),
    /// POST /chat/send/ requests per second over keep-alive connections.
    HttpPublish(http_publish::HttpPublish),
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot use URL `{0}` (expected http://IP:PORT)")]
    Url(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("WebSocket: {0}")]
    WebSocket(#[from] tokio_websockets::Error),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("a load task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("{0}")]
    Report(String),
}

/// Parses `500ms`, `10s`, `2m` (a bare number is seconds).
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{value}` is not a duration"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "" | "s" => Ok(Duration::from_secs(number)),
        "m" => Ok(Duration::from_secs(number * 60)),
        _ => Err(format!("unknown unit in `{value}` (use ms, s or m)")),
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Each connection is a file; take every one the hard limit allows.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("livechat-bench: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("livechat-bench: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Alone, a run measures and reports. With `--workers N` the parent starts N workers and
/// merges what they hand in; a worker runs its slice and hands in its raw result.
async fn run(cli: Cli) -> Result<(), BenchError> {
    let count = cli.workers.max(1);
    let slice = cli.worker_slice.map(|index| Slice { index, count });
    let spread = count > 1 && slice.is_none();
    let slice = slice.unwrap_or(Slice::WHOLE);
    let target = Arc::new(Target::parse(&cli.url, cli.source_ips.clone())?);
    let (name, (parameters, results)) = match cli.scenario {
        Scenario::Fanout(options) => {
            let raws = if spread {
                workers::run(count, || async {}).await?.0
            } else {
                let publish_to = match &options.publish_url {
                    Some(url) => Arc::new(Target::parse(url, cli.source_ips.clone())?),
                    None => target.clone(),
                };
                let raw = fanout::run(&options, target, publish_to, &cli.path, slice).await?;
                if slice.is_worker() {
                    return workers::hand_in(&raw);
                }
                vec![raw]
            };
            ("fanout", fanout::report(&options, &raws))
        }
        Scenario::Idle(options) => {
            let (raws, resident) = if spread {
                let pid = options.server_pid;
                let before = pid.map(idle::resident_bytes).transpose()?;
                let hold = options.hold;
                let (raws, after) = workers::run(count, || async move {
                    tokio::time::sleep(hold).await;
                    pid.map(idle::resident_bytes)
                })
                .await?;
                (raws, before.zip(after.transpose()?))
            } else {
                let raw = idle::run(&options, target, &cli.path, slice).await?;
                if slice.is_worker() {
                    return workers::hand_in(&raw);
                }
                (vec![raw], None)
            };
            ("idle", idle::report(&options, &raws, resident))
        }
        Scenario::Connect(options) => {
            let raws = if spread {
                workers::run(count, || async {}).await?.0
            } else {
                let raw = connect::run(&options, target, &cli.path, slice).await?;
                if slice.is_worker() {
                    return workers::hand_in(&raw);
                }
                vec![raw]
            };
            ("connect", connect::report(&options, &raws))
        }
        Scenario::HttpPublish(options) => {
            let raws = if spread {
                workers::run(count, || async {}).await?.0
            } else {
                let raw = http_publish::run(&options, target, slice).await?;
                if slice.is_worker() {
                    return workers::hand_in(&raw);
                }
                vec![raw]
            };
            ("http-publish", http_publish::report(&options, &raws))
        }
    };
    report::print(name, parameters, results);
    Ok(())
}
