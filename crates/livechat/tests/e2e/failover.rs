//! Redis Sentinel: a master, two replicas and three sentinels (real `redis-server` processes,
//! the sentinels in `--sentinel` mode); livechat nodes find the master through the sentinels and
//! follow a failover after the master is killed.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::process::{Child, Command};

use crate::support::{Server, eventually, redis_cli, spawn_redis_on_free_port};

/// A replicated Redis watched by three sentinels, on free ports in a temporary directory.
struct Replicated {
    servers: Vec<(u16, Child)>,
    sentinels: Vec<(u16, Child)>,
    _dir: tempfile::TempDir,
}

impl Replicated {
    async fn start() -> Replicated {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut servers = Vec::new();
        let (child, master) = redis(dir.path(), None).await;
        servers.push((master, child));
        for _ in 0..2 {
            let (child, port) = redis(dir.path(), Some(master)).await;
            servers.push((port, child));
        }
        let mut sentinels = Vec::new();
        for _ in 0..3 {
            let (child, port) = spawn_redis_on_free_port(|port| {
                let config = dir.path().join(format!("sentinel-{port}.conf"));
                let text = format!(
                    "port {port}\nbind 127.0.0.1\n\
                     sentinel monitor mymaster 127.0.0.1 {master} 2\n\
                     sentinel down-after-milliseconds mymaster 1000\n\
                     sentinel failover-timeout mymaster 5000\n\
                     sentinel parallel-syncs mymaster 2\n"
                );
                std::fs::write(&config, text).expect("sentinel config");
                let mut command = Command::new("redis-server");
                command.arg(&config).arg("--sentinel");
                command
            })
            .await;
            sentinels.push((port, child));
        }
        let replicated = Replicated {
            servers,
            sentinels,
            _dir: dir,
        };
        eventually("both replicas in sync with the master", || async {
            redis_cli(master, &["INFO", "replication"])
                .await
                .matches("state=online")
                .count()
                == 2
        })
        .await;
        eventually("the sentinels see both replicas", || async {
            replicated
                .sentinel(&["SENTINEL", "REPLICAS", "mymaster"])
                .await
                .matches("slave")
                .count()
                >= 2
        })
        .await;
        replicated
    }

    fn sentinel_addresses(&self) -> String {
        let addresses: Vec<String> = self
            .sentinels
            .iter()
            .map(|(port, _)| format!("127.0.0.1:{port}"))
            .collect();
        addresses.join(",")
    }

    async fn sentinel(&self, args: &[&str]) -> String {
        redis_cli(self.sentinels[0].0, args).await
    }

    /// The port of the master the sentinels name now.
    async fn master_port(&self) -> u16 {
        let answer = self
            .sentinel(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"])
            .await;
        answer
            .lines()
            .nth(1)
            .and_then(|port| port.trim().parse().ok())
            .expect("a master port")
    }

    async fn kill_master(&mut self) -> u16 {
        let master = self.master_port().await;
        let index = self
            .servers
            .iter()
            .position(|(port, _)| *port == master)
            .expect("the master");
        let (_, mut child) = self.servers.remove(index);
        let _ = child.kill().await;
        master
    }
}

/// A redis-server on a free port (with `replica_of`, a replica of that master); its child and port.
async fn redis(dir: &Path, replica_of: Option<u16>) -> (Child, u16) {
    spawn_redis_on_free_port(|port| {
        let data = dir.join(port.to_string());
        std::fs::create_dir_all(&data).expect("data dir");
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&data);
        if let Some(master) = replica_of {
            command.args(["--replicaof", "127.0.0.1", &master.to_string()]);
        }
        command
    })
    .await
}

async fn node(replicated: &Replicated, wait_replicas: &str) -> Server {
    let sentinels = replicated.sentinel_addresses();
    let args = [
        "--redis-sentinel",
        sentinels.as_str(),
        "--redis-wait-replicas",
        wait_replicas,
        "--node-ttl",
        "1500ms",
    ];
    // The embedded engine's start with a data directory of its own; the sentinels make it Redis.
    Server::start(&args).await
}

/// Kills the master while a client publishes: publishes fail loudly meanwhile, the nodes follow
/// the promoted replica, delivery resumes on the same sockets, and every acknowledged message
/// is in history (each was confirmed by a replica before it was acknowledged).
#[tokio::test]
async fn nodes_follow_a_failover_and_lose_no_acknowledged_message() {
    let mut replicated = Replicated::start().await;
    let a = node(&replicated, "1").await;
    let b = node(&replicated, "1").await;
    let mut on_b = b.join("failover").await;
    let mut acknowledged = Vec::new();
    for n in 0..20 {
        let answer = a.post_message("failover", json!(n)).await;
        acknowledged.push(answer["id"].as_u64().expect("an id"));
    }
    for n in 0..20 {
        assert_eq!(on_b.recv().await, json!({ "message": n }));
    }

    let old_master = replicated.kill_master().await;
    let killed = Instant::now();
    let mut refused = 0;
    let mut unready = false;
    let mut n = 20;
    let back = loop {
        unready |= a.http("GET", "/readyz", None).await.status == 503;
        let body = json!({"room": "failover", "message": n}).to_string();
        let answer = a.http("POST", "/chat/send/", Some(&body)).await;
        match answer.status {
            200 => {
                acknowledged.push(answer.json()["id"].as_u64().expect("an id"));
                break killed.elapsed();
            }
            503 => refused += 1,
            status => panic!("unexpected answer {status}: {answer:?}"),
        }
        n += 1;
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "never recovered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let new_master = replicated.master_port().await;
    eprintln!(
        "failover: master {old_master} -> {new_master}; first publish accepted {back:?} after the kill, {refused} refused meanwhile"
    );
    assert_ne!(new_master, old_master);
    assert!(
        refused > 0,
        "publishes in between were refused, not lost silently"
    );
    assert!(unready, "not ready while there was no master");
    for node in [&a, &b] {
        eventually("/readyz turns 200", || async {
            node.http("GET", "/readyz", None).await.status == 200
        })
        .await;
    }
    // Delivery resumes on the same socket.
    b.post_message("failover", json!("after")).await;
    loop {
        let frame = on_b.recv().await;
        if frame["message"] == "after" {
            break;
        }
    }
    // Every acknowledged message survived.
    let stored: Vec<u64> = a
        .history("?room=failover&limit=1000")
        .await
        .iter()
        .map(|message| message["id"].as_u64().expect("an id"))
        .collect();
    for id in acknowledged {
        assert!(
            stored.contains(&id),
            "acknowledged {id} is in history: {stored:?}"
        );
    }
}

/// Without `WAIT`, a failover may lose the last acknowledged messages; a client that resumes
/// with `since` then gets every acknowledged message or is told what it will not get.
#[tokio::test]
async fn without_wait_a_resuming_client_gets_every_acknowledged_message_or_is_told() {
    let mut replicated = Replicated::start().await;
    let a = node(&replicated, "0").await;
    let b = node(&replicated, "0").await;
    let mut acknowledged = Vec::new();
    let mut epoch = None;
    for n in 0..50 {
        let answer = a.post_message("told", json!(n)).await;
        acknowledged.push(answer["id"].as_u64().expect("an id"));
        epoch = answer["epoch"].as_str().map(str::to_owned);
    }
    replicated.kill_master().await;
    eventually("a publish is accepted again", || async {
        let body = json!({"room": "told", "message": "after"}).to_string();
        b.http("POST", "/chat/send/", Some(&body)).await.status == 200
    })
    .await;
    let epoch = epoch.expect("an epoch");
    let mut resumed = b
        .connect(&format!("/ws/chat/told/?meta=1&since=0&epoch={epoch}"))
        .await;
    let mut got = Vec::new();
    loop {
        let frame = resumed.recv().await;
        match frame["event"].as_str() {
            Some("reset" | "gap") => return, // Told.
            Some("caught_up") => break,
            _ => got.push(frame["id"].as_u64().expect("an id")),
        }
    }
    for id in acknowledged {
        assert!(
            got.contains(&id),
            "acknowledged {id} replayed, or a reset/gap told: {got:?}"
        );
    }
}
