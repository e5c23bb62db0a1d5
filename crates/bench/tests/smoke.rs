//! Each scenario runs against the real livechat server on a tiny load and reports sane figures,
//! and one that cannot run (no server) says so and exits non-zero. Nothing here asserts speed:
//! figures belong in benchmarks, not tests.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

struct Server {
    child: Child,
    url: String,
    _data: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The livechat binary next to this package's binary (built on demand when missing).
fn livechat_binary() -> PathBuf {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_livechat-bench"));
    let server = bench.with_file_name("livechat");
    if !server.exists() {
        let profile = if cfg!(debug_assertions) {
            vec![]
        } else {
            vec!["--release"]
        };
        let built = Command::new(env!("CARGO"))
            .args(["build", "-p", "livechat", "--bin", "livechat"])
            .args(profile)
            .status()
            .expect("cargo build");
        assert!(built.success());
    }
    server
}

fn start_server() -> Server {
    let data = tempfile::tempdir().expect("temp dir");
    let mut command = Command::new(livechat_binary());
    command
        .args(["--bind", "127.0.0.1:0", "--store", "memory", "--data-dir"])
        .arg(data.path());
    serve(command, data)
}

/// The floor (`livechat-bench floor`), on a free port.
fn start_floor() -> Server {
    let mut command = Command::new(env!("CARGO_BIN_EXE_livechat-bench"));
    command.args(["floor", "--bind", "127.0.0.1:0"]);
    serve(command, tempfile::tempdir().expect("temp dir"))
}

/// Starts a server that says `listening on URL` on stderr.
fn serve(mut command: Command, data: tempfile::TempDir) -> Server {
    let mut child = command
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the server");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let url = loop {
        let line = lines.next().expect("livechat exited").expect("read");
        if let Some(address) = line.split("listening on ").nth(1) {
            break address.trim().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Server {
        child,
        url,
        _data: data,
    }
}

fn bench(server: &Server, args: &[&str]) -> Value {
    bench_at(&server.url, args)
}

/// Runs livechat-bench against `urls` (one, or several comma-separated); its JSON line.
fn bench_at(urls: &str, args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_livechat-bench"))
        .args(["--url", urls])
        .args(args)
        .output()
        .expect("run livechat-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout.lines().last().expect("a JSON line");
    serde_json::from_str(line).expect("the last line is JSON")
}

fn assert_ordered_latency(report: &Value) {
    let latency = &report["latency"];
    let p50 = latency["p50_ms"].as_f64().unwrap();
    let p99 = latency["p99_ms"].as_f64().unwrap();
    let max = latency["max_ms"].as_f64().unwrap();
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{latency}");
}

/// A small fan-out (2 rooms x 5 subscribers, 1 s), with `leading` arguments before the scenario;
/// checks that every delivery arrived and the report is sane.
fn small_fanout(server: &Server, leading: &[&str]) -> Value {
    let mut args = leading.to_vec();
    args.extend([
        "fanout",
        "--rooms",
        "2",
        "--subscribers",
        "5",
        "--rate",
        "50",
    ]);
    args.extend(["--duration", "1s", "--drain", "1s"]);
    let report = bench(server, &args);
    assert_eq!(report["scenario"], "fanout");
    assert_eq!(report["connections"], 12, "{report}");
    assert!(report["deliveries"].as_u64().unwrap() > 0);
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["deliveries"], report["expected_deliveries"]);
    assert_ordered_latency(&report);
    report
}

#[test]
fn fanout_reports_every_delivery_and_the_cpu_it_cost() {
    let server = start_server();
    let pid = server.child.id().to_string();
    let report = small_fanout(&server, &["--server-pid", &pid]);
    assert!(report["bench_cpu_s"].as_f64().unwrap() > 0.0, "{report}");
    let server_cpu_s = report["server_cpu_s"].as_f64().unwrap();
    let per_million = report["server_cpu_s_per_million"].as_f64().unwrap();
    let deliveries = report["deliveries"].as_f64().unwrap();
    let expected = server_cpu_s / (deliveries / 1e6);
    assert!(
        (per_million - expected).abs() <= 0.001 + expected / 100.0,
        "{report}"
    );
}

/// The floor serves the fan-out as a server does: every frame to every member, the send time
/// intact (latency), its own CPU per delivery in the report.
#[test]
fn the_floor_delivers_every_frame_of_a_fanout() {
    let floor = start_floor();
    let pid = floor.child.id().to_string();
    let report = small_fanout(&floor, &["--server-pid", &pid]);
    assert!(
        report["server_cpu_s_per_million"].as_f64().is_some(),
        "{report}"
    );
    assert!(
        report["server_written_bytes"].as_u64().unwrap() > 0,
        "{report}"
    );
}

#[test]
fn fanout_holds_an_idle_crowd_through_the_run() {
    let server = start_server();
    let args = [
        "fanout",
        "--rooms",
        "2",
        "--subscribers",
        "3",
        "--idle-connections",
        "7",
        "--duration",
        "1s",
    ];
    let report = bench(&server, &args);
    assert_eq!(report["connections"], 2 * 3 + 2 + 7, "{report}");
    assert_eq!(report["idle_open"], 7, "{report}");
    assert_eq!(report["idle_closed_early"], 0, "{report}");
    assert_eq!(report["lost"], 0, "{report}");
}

/// `livechat_connections` on a server's /metrics.
fn open_connections(server: &Server) -> Option<u64> {
    let address = server.url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    use std::io::{Read, Write};
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    body.lines()
        .find_map(|line| line.strip_prefix("livechat_connections "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map(|value| value as u64)
}

#[test]
fn idle_spreads_over_several_servers() {
    let servers = [start_server(), start_server()];
    let urls = format!("{},{}", servers[0].url, servers[1].url);
    let pids = format!("{},{}", servers[0].child.id(), servers[1].child.id());
    let watching = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            // Each server holds half of the connections while the run holds them.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while std::time::Instant::now() < deadline {
                if servers
                    .iter()
                    .all(|server| open_connections(server) == Some(5))
                {
                    return true;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            false
        });
        let args = [
            "--server-pid",
            &pids,
            "idle",
            "--connections",
            "10",
            "--hold",
            "3s",
        ];
        let report = bench_at(&urls, &args);
        assert_eq!(report["open"], 10, "{report}");
        let per_server = report["server_rss_bytes"]
            .as_array()
            .expect("one per server");
        assert_eq!(per_server.len(), 2, "{report}");
        watcher.join().expect("watcher")
    });
    assert!(watching, "each server should have held 5 connections");
}

#[test]
fn a_scenario_that_cannot_run_exits_non_zero() {
    // A port nothing listens on: bound, then let go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let output = Command::new(env!("CARGO_BIN_EXE_livechat-bench"))
        .args(["--url", &format!("http://127.0.0.1:{port}")])
        .args(["connect", "--connections", "10"])
        .output()
        .expect("run livechat-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    // The summary is still printed, then the reason.
    let report: Value = serde_json::from_str(stdout.lines().last().expect("a JSON line"))
        .expect("the last line is JSON");
    assert_eq!(report["failed"], 10, "{report}");
    assert_eq!(report["handshakes"], 0, "{report}");
    assert!(
        stderr.contains("livechat-bench: connect could not run: no handshake succeeded"),
        "{stderr}"
    );
}

#[test]
fn workers_split_the_load_and_the_parent_merges_it() {
    let server = start_server();
    let pid = server.child.id().to_string();
    let report = small_fanout(&server, &["--workers", "2", "--server-pid", &pid]);
    assert_eq!(report["parameters"]["workers"], 2);
    // The workers' CPU is counted with the parent's; the server's is read by the parent.
    assert!(report["bench_cpu_s"].as_f64().unwrap() > 0.0, "{report}");
    assert!(
        report["server_cpu_s_per_million"].as_f64().is_some(),
        "{report}"
    );
    let report = bench(
        &server,
        &[
            "--workers",
            "2",
            "idle",
            "--connections",
            "101",
            "--hold",
            "200ms",
            "--server-pid",
            &pid,
        ],
    );
    assert_eq!(report["open"], 101);
    assert!(
        report["rss_per_connection_bytes"].as_f64().unwrap() > 0.0,
        "{report}"
    );
}

#[test]
fn http_publish_and_connect_report_rates() {
    let server = start_server();
    let report = bench(
        &server,
        &["http-publish", "--connections", "2", "--duration", "1s"],
    );
    assert!(report["requests_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(report["non_200"], 0);
    assert_ordered_latency(&report);
    let report = bench(
        &server,
        &["connect", "--connections", "50", "--concurrency", "5"],
    );
    assert_eq!(report["handshakes"], 50);
    assert_eq!(report["failed"], 0);
}

#[test]
fn idle_reports_memory_per_connection() {
    let server = start_server();
    let pid = server.child.id().to_string();
    let report = bench(
        &server,
        &[
            "idle",
            "--connections",
            "200",
            "--hold",
            "200ms",
            "--server-pid",
            &pid,
        ],
    );
    assert_eq!(report["open"], 200);
    assert!(
        report["rss_per_connection_bytes"].as_f64().unwrap() > 0.0,
        "{report}"
    );
}
