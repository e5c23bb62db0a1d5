//! livechat-bench: load for any server that speaks the Django Channels live chat protocol (WebSocket rooms
//! at a path template, `{"message": X}` frames, `POST /chat/send/`).
//!
//! Each scenario prints a short summary for people, then one JSON line for scripts. A scenario
//! that could not run (no connection opened, nothing delivered or answered) still prints both,
//! then says why on stderr and exits 1.

mod client;
mod connect;
mod cpu;
mod deflate;
mod fanout;
mod floor;
mod http_publish;
mod idle;
mod replay;
mod report;
mod workers;

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::client::{Nodes, Target};
use crate::report::Summary;
use crate::workers::{Gathered, Slice};

#[derive(Debug, Parser)]
#[command(name = "livechat-bench", version, about, after_help = AFTER_HELP)]
struct Cli {
    /// Base URL of the server. `fanout` and `idle` take several, comma-separated (the nodes of one
    /// deployment): connection number N goes to the Nth, round-robin, so every room spans them.
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "http://127.0.0.1:8003"
    )]
    url: Vec<String>,
    /// WebSocket path template; `{room}` is replaced by the room name (and, for `idle`, `{index}` by
    /// the connection's number, e.g. `/ws/chat/{room}/?presence=1&name=u{index}`).
    #[arg(long, global = true, default_value = "/ws/chat/{room}/")]
    path: String,
    /// Local addresses to open connections from, round-robin (e.g. 127.0.0.1,127.0.0.2): one
    /// source address reaches about 28,000 connections to one port.
    #[arg(long, global = true, value_delimiter = ',')]
    source_ips: Vec<IpAddr>,
    /// Load processes to spread the connections over (one process holds about 19,900 here).
    #[arg(long, global = true, default_value_t = 1)]
    workers: usize,
    /// The server's process id (several, comma-separated, for several nodes): its CPU time over
    /// the measured part (`server_cpu_s`) and its resident memory per connection are read from
    /// /proc.
    #[arg(long, global = true, value_delimiter = ',')]
    server_pid: Vec<u32>,
    /// Subscribers and idle connections offer permessage-deflate (as browsers do) and fail if
    /// the server does not agree; publishers stay plain.
    #[arg(long, global = true)]
    deflate: bool,
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
    /// Clients reconnecting at once with `?since=` (livechat only): time to catch up.
    Replay(replay::Replay),
    /// Not a load but a server to load: the floor, one thread without a runtime relaying each
    /// room's frames to its members, to state CPU per delivery against (docs/benchmarks.md).
    Floor(floor::Floor),
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
    #[error("{0} could not run: {1}")]
    CouldNotRun(&'static str, String),
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
    // The floor runs on this thread alone, without a runtime.
    if let Scenario::Floor(options) = &cli.scenario {
        return match floor::serve(options) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("livechat-bench floor: {error}");
                std::process::ExitCode::FAILURE
            }
        };
    }
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

/// What this process does: the whole run alone, one slice as a worker, or the parent of workers.
#[derive(Clone, Copy)]
enum Role {
    Alone,
    Worker(Slice),
    Parent(usize),
}

/// Runs `run_here` alone (its result, as a list of one) or as a worker (hands the result to the
/// parent and returns None), or, as a parent, collects its workers' results (and the CPU seconds
/// they used); `when_ready` runs in the parent once every worker holds its connections.
async fn gather<R, F, Fut, Ready>(
    role: Role,
    when_ready: Ready,
    run_here: F,
) -> Result<Option<(Vec<R>, f64)>, BenchError>
where
    R: Serialize + DeserializeOwned,
    F: FnOnce(Slice) -> Fut,
    Fut: Future<Output = Result<R, BenchError>>,
    Ready: Future<Output = ()>,
{
    match role {
        Role::Alone => Ok(Some((vec![run_here(Slice::WHOLE).await?], 0.0))),
        Role::Worker(slice) => {
            workers::hand_in(&run_here(slice).await?)?;
            Ok(None)
        }
        Role::Parent(count) => {
            let gathered: Gathered<R> = workers::run(count, when_ready).await?;
            Ok(Some((gathered.raws, gathered.cpu_s)))
        }
    }
}

async fn run(cli: Cli) -> Result<(), BenchError> {
    let count = cli.workers.max(1);
    let role = match cli.worker_slice {
        Some(index) => Role::Worker(Slice { index, count }),
        None if count > 1 => Role::Parent(count),
        None => Role::Alone,
    };
    // Workers leave the servers' clocks to the parent.
    if !cli.server_pid.is_empty() && cli.worker_slice.is_none() {
        cpu::watch_servers(&cli.server_pid)?;
    }
    let nodes = Arc::new(Nodes::parse(&cli.url, &cli.source_ips, cli.deflate)?);
    let path = cli.path.as_str();
    let nothing = async {};
    let (name, (mut summary, workers_cpu_s)) = match cli.scenario {
        Scenario::Fanout(options) => {
            let publish_to = match &options.publish_url {
                Some(url) => Arc::new(Target::parse(url, cli.source_ips.clone(), false)?),
                None => nodes.for_connection(0).clone(),
            };
            let run_here = |slice| fanout::run(&options, nodes, publish_to, path, slice);
            let Some((raws, cpu_s)) = gather(role, nothing, run_here).await? else {
                return Ok(());
            };
            ("fanout", (fanout::report(&options, &raws), cpu_s))
        }
        // The parent reads the servers' memory itself, once every worker holds its connections.
        Scenario::Idle(options) => {
            let run_here = |slice| idle::run(&options, nodes, path, slice);
            let Some((raws, cpu_s)) = gather(role, idle::hold(&options), run_here).await? else {
                return Ok(());
            };
            ("idle", (idle::report(&options, &raws), cpu_s))
        }
        Scenario::Connect(options) => {
            let target = nodes.only("connect")?;
            let run_here = |slice| connect::run(&options, target, path, slice);
            let Some((raws, cpu_s)) = gather(role, nothing, run_here).await? else {
                return Ok(());
            };
            ("connect", (connect::report(&options, &raws), cpu_s))
        }
        Scenario::HttpPublish(options) => {
            let target = nodes.only("http-publish")?;
            let run_here = |slice| http_publish::run(&options, target, slice);
            let Some((raws, cpu_s)) = gather(role, nothing, run_here).await? else {
                return Ok(());
            };
            (
                "http-publish",
                (http_publish::report(&options, &raws), cpu_s),
            )
        }
        Scenario::Replay(options) => {
            let target = nodes.only("replay")?;
            let run_here = |slice| replay::run(&options, target, path, slice);
            let Some((raws, cpu_s)) = gather(role, nothing, run_here).await? else {
                return Ok(());
            };
            ("replay", (replay::report(&options, &raws), cpu_s))
        }
        Scenario::Floor(_) => unreachable!("served by main without a runtime"),
    };
    add_cpu(name, &mut summary, cpu::own_seconds() + workers_cpu_s);
    add_memory(name, &mut summary);
    report::print(name, &summary);
    match summary.failure {
        Some(reason) => Err(BenchError::CouldNotRun(name, reason)),
        None => Ok(()),
    }
}

const AFTER_HELP: &str = "\
CPU figures in every JSON line:
  bench_cpu_s               the load generator's user + system CPU seconds over the whole run,
                            its worker processes included (getrusage)
  server_cpu_s              with --server-pid: the server's utime + stime (/proc/PID/stat) from
                            the start line (every connection open) to the end of the load
                            (for fanout, of the drain); with several pids, their sum
  server_cpu_s_per_million  fanout with --server-pid: server_cpu_s per million deliveries
  server_written_bytes      fanout with --server-pid: bytes the server wrote over the same span
                            (wchar in /proc/PID/io: its sockets' bytes, frame headers included),
                            and server_written_bytes_per_delivery; compare runs with and
                            without --deflate

Memory, fanout and idle with --server-pid (VmRSS from /proc/PID/status):
  server_rss_before_bytes   before the run's connections open (summed over the pids)
  server_rss_after_bytes    with them open: fanout at the start line, idle after --hold
  rss_per_connection_bytes  (after - before) / connections; also in KiB
  server_rss_bytes          with several pids: each one's resident bytes with the connections

Exit status: 0 when the scenario ran; 1 on an error, or when it could not run (no connection
opened, nothing published or delivered, no request answered 200): the summary is printed, then
`livechat-bench: SCENARIO could not run: REASON` on stderr.";

/// Adds the servers' memory to a scenario's results that hold connections (fanout, idle): in
/// all, per server, and per connection.
fn add_memory(scenario: &str, summary: &mut Summary) {
    let Some((before, after)) = cpu::server_memory() else {
        return;
    };
    if !matches!(scenario, "fanout" | "idle") {
        return;
    }
    let results = &mut summary.results;
    let connections = ["open", "connections"]
        .iter()
        .find_map(|key| results.get(*key).and_then(|value| value.as_u64()))
        .unwrap_or(0);
    let (before_total, after_total): (u64, u64) = (before.iter().sum(), after.iter().sum());
    let per_connection =
        after_total.saturating_sub(before_total) as f64 / connections.max(1) as f64;
    results.insert("server_rss_before_bytes".into(), json!(before_total));
    results.insert("server_rss_after_bytes".into(), json!(after_total));
    results.insert(
        "rss_per_connection_bytes".into(),
        json!(per_connection.round()),
    );
    results.insert(
        "rss_per_connection_kib".into(),
        json!((per_connection / 1024.0 * 100.0).round() / 100.0),
    );
    if after.len() > 1 {
        results.insert("server_rss_bytes".into(), json!(after));
    }
}

/// Adds the CPU figures to a scenario's results.
fn add_cpu(scenario: &str, summary: &mut Summary, bench_cpu_s: f64) {
    let round = |seconds: f64| (seconds * 1000.0).round() / 1000.0;
    let results = &mut summary.results;
    results.insert("bench_cpu_s".into(), json!(round(bench_cpu_s)));
    let Some(server_cpu_s) = cpu::server_seconds() else {
        return;
    };
    results.insert("server_cpu_s".into(), json!(round(server_cpu_s)));
    let deliveries = results.get("deliveries").and_then(|value| value.as_u64());
    if let ("fanout", Some(deliveries @ 1..)) = (scenario, deliveries) {
        let per_million = server_cpu_s / (deliveries as f64 / 1e6);
        results.insert("server_cpu_s_per_million".into(), json!(round(per_million)));
        if let Some(written) = cpu::server_written_bytes() {
            results.insert("server_written_bytes".into(), json!(written));
            let per_delivery = written as f64 / deliveries as f64;
            results.insert(
                "server_written_bytes_per_delivery".into(),
                json!((per_delivery * 10.0).round() / 10.0),
            );
        }
    }
}
