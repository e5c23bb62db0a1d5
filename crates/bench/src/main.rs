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

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::client::Target;

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

async fn run(cli: Cli) -> Result<(), BenchError> {
    let target = Arc::new(Target::parse(&cli.url, cli.source_ips.clone())?);
    let (name, (parameters, results)) = match cli.scenario {
        Scenario::Fanout(options) => {
            let publish_to = match &options.publish_url {
                Some(url) => Arc::new(Target::parse(url, cli.source_ips.clone())?),
                None => target.clone(),
            };
            (
                "fanout",
                fanout::run(options, target, publish_to, &cli.path).await?,
            )
        }
        Scenario::Idle(options) => ("idle", idle::run(options, target, &cli.path).await?),
        Scenario::Connect(options) => ("connect", connect::run(options, target, &cli.path).await?),
        Scenario::HttpPublish(options) => {
            ("http-publish", http_publish::run(options, target).await?)
        }
    };
    report::print(name, parameters, results);
    Ok(())
}
