//! CONTRACT section 3, faults on one node: slow consumers, kill -9, graceful shutdown.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;

use crate::support::{Event, Server, eventually};

#[tokio::test]
async fn a_client_that_never_reads_is_closed_with_1008_and_the_others_keep_receiving() {
    // The slow client reads only once the fast one has everything, which on a loaded machine
    // can take longer than the 5 s a closing connection waits by default.
    let server = Server::start(&["--outbound-queue", "16", "--shutdown-timeout", "60s"]).await;
    let mut slow = server.join("crowd").await;
    let mut fast = server.join("crowd").await;
    // Big frames fill the slow client's socket buffers, then its queue.
    let padding = "p".repeat(64 * 1024);
    let count = 300;
    let reading = tokio::spawn(async move {
        for n in 0..count {
            let frame = fast.recv().await;
            assert_eq!(
                frame["message"]["n"], n,
                "fast reader got every message in order"
            );
        }
    });
    for n in 0..count {
        server
            .post_message("crowd", json!({"n": n, "pad": padding}))
            .await;
    }
    tokio::time::timeout(Duration::from_secs(60), reading)
        .await
        .expect("fast reader finished in time")
        .expect("fast reader");
    // Now the slow client reads: what was already sent, then the close frame.
    let (code, reason) = slow.recv_close().await;
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("slow consumer"), "{reason}");
}

#[tokio::test]
async fn kill_9_loses_nothing_that_was_acknowledged() {
    let mut server = Server::start(&[]).await;
    let mut client = server.join("crash").await;
    let mut acknowledged = HashSet::new();
    // Keep a window of messages in flight, so the kill lands mid-stream.
    let mut sent = 0u64;
    for _ in 0..20 {
        client.send_json(json!({"message": sent})).await;
        sent += 1;
    }
    let addr = server.addr;
    let mut killed = false;
    while let Some(Event::Frame(frame)) = client.next_event_within(Duration::from_secs(5)).await {
        acknowledged.insert(frame["message"].as_u64().unwrap());
        if acknowledged.len() == 200 && !killed {
            server.kill9().await;
            killed = true;
        } else if !killed {
            client.send_json(json!({"message": sent})).await;
            sent += 1;
        }
    }
    assert!(killed, "the server was killed mid-stream");
    server.restart().await;
    assert_eq!(server.addr, addr);
    let stored: HashSet<u64> = server
        .history("?room=crash&limit=1000")
        .await
        .iter()
        .map(|m| m["message"].as_u64().unwrap())
        .collect();
    let lost: Vec<_> = acknowledged.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    // An HTTP 200 is an acknowledgement too.
    let answer = server.post_message("crash", json!("after")).await;
    server.kill9().await;
    server.restart().await;
    let page = server.history("?room=crash&limit=1").await;
    assert_eq!(page[0]["id"], answer["id"], "an HTTP 200 survives kill -9");
}

#[tokio::test]
async fn sigterm_closes_sockets_with_1001_keeps_what_was_accepted_ends_every_task_and_exits_0() {
    let mut server = Server::start(&[]).await;
    let mut client = server.join("bye").await;
    for n in 0..50 {
        client.send_json(json!({"message": n})).await;
    }
    // Wait for the last echo: everything is acknowledged.
    loop {
        if client.recv().await["message"] == 49 {
            break;
        }
    }
    let status = server.stop().await;
    assert_eq!(client.recv_close().await.0, 1001);
    assert!(status.success(), "exit status {status:?}");
    eventually("the shutdown says every background task ended", || async {
        server.logged(&["every background task ended"])
    })
    .await;
    if !crate::support::on_redis() {
        // Everything is in the history file itself: its write-ahead log was folded in.
        let wal = server.data_dir.join("history.sqlite3-wal");
        let left = std::fs::metadata(&wal).map_or(0, |meta| meta.len());
        assert_eq!(left, 0, "{} bytes left in {}", left, wal.display());
    }
    server.restart().await;
    assert_eq!(server.history("?room=bye&limit=100").await.len(), 50);
}
