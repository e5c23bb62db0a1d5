//! Prometheus metrics, checked with the real tools: `promtool check metrics` on a scrape taken
//! under load, and a real `prometheus` scraping the server, queried over its HTTP API.

use std::net::SocketAddr;
use std::process::Stdio;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::support::{Server, eventually, http};

fn free_address() -> SocketAddr {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    probe.local_addr().expect("address")
}

/// The value of the series `name` (with `labels` inside its braces) in a scrape.
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test]
async fn metrics_on_their_own_address_pass_promtool_and_prometheus_scrapes_them() {
    let metrics_addr = free_address();
    let bind = metrics_addr.to_string();
    let server = Server::start(&["--metrics-bind", &bind]).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(server.join("measured").await);
    }
    for n in 0..10 {
        clients[0].send_json(json!({ "message": n })).await;
        server.post_message("measured", json!(n)).await;
    }
    for client in &mut clients {
        for _ in 0..20 {
            client.recv().await;
        }
    }
    let scrape = http(metrics_addr, "GET", "/metrics", None, &[]).await;
    assert_eq!(scrape.status, 200);
    let text = scrape.body;
    assert_eq!(sample(&text, "livechat_connections "), Some(3.0), "{text}");
    assert_eq!(sample(&text, "livechat_rooms "), Some(1.0));
    assert_eq!(sample(&text, "livechat_deliveries_total "), Some(60.0));
    assert_eq!(
        sample(
            &text,
            r#"livechat_messages_published_total{transport="ws"} "#
        ),
        Some(10.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"livechat_messages_published_total{transport="http"} "#
        ),
        Some(10.0)
    );
    assert!(text.contains("livechat_store_commit_seconds_bucket"));
    assert!(text.contains(r#"livechat_http_requests_total{route="/chat/send/",status="200"} 10"#));
    // Not on the public port.
    assert_eq!(server.http("GET", "/metrics", None).await.status, 404);

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool must be installed (./scripts/test.sh installs prometheus)");
    let mut stdin = promtool.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).await.unwrap();
    drop(stdin);
    let checked = promtool.wait_with_output().await.unwrap();
    assert!(
        checked.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // A real Prometheus scrapes it every second.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: livechat\n    \
             static_configs:\n      - targets: ['{metrics_addr}']\n"
        ),
    )
    .unwrap();
    let web = free_address();
    let _prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("prometheus must be installed (./scripts/test.sh installs it)");
    eventually("Prometheus has scraped livechat_connections", || async {
        let Ok(answer) = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            try_http(web, "/api/v1/query?query=livechat_connections"),
        )
        .await
        else {
            return false;
        };
        let Some(answer) = answer else { return false };
        answer["data"]["result"][0]["value"][1] == "3"
    })
    .await;
}

/// A GET that may find nothing listening yet.
async fn try_http(addr: SocketAddr, path: &str) -> Option<Value> {
    tokio::net::TcpStream::connect(addr).await.ok()?;
    let answer = http(addr, "GET", path, None, &[]).await;
    (answer.status == 200).then(|| answer.json())
}
