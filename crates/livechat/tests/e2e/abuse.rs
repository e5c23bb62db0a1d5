//! A hostile load cannot make the server hold unbounded memory: sockets that never read, clients
//! publishing 1 MiB messages as fast as they can, and parallel large history pages at once. The
//! non-readers are closed as slow consumers, the server's peak memory stays under a bound, and
//! every acknowledged message is in history.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::{Server, http};

/// Peak resident memory the server may reach in this scenario (documented in docs/production.md).
const PEAK_RSS_BOUND_MB: u64 = 400;
const ROOMS: [&str; 4] = ["flood_a", "flood_b", "flood_c", "flood_d"];
const FLOOD_FOR: Duration = Duration::from_secs(6);
const MESSAGE_BYTES: usize = 1 << 20;

fn peak_rss_mb(pid: u32) -> u64 {
    crate::support::peak_rss_kib(pid) / 1024
}

/// A WebSocket that completes its handshake and then never reads another byte.
async fn non_reader(server: &Server, room: &str) -> TcpStream {
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    let request = format!(
        "GET /ws/chat/{room}/ HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.addr
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("handshake");
    stream
}

/// A refusal the flood may cause on the Redis engine: Redis disconnects a node whose
/// subscription falls more than its pub/sub output buffer (32 MB by default) behind, and the node
/// answers 503 until it has reconnected and caught up from the stream. Loud, never silent.
fn acceptable(status: u16) -> bool {
    status == 200 || (crate::support::on_redis() && status == 503)
}

/// Publishes 1 MiB messages over HTTP until the flood ends; the ids acknowledged.
async fn publisher(server: &Server, room: &'static str, until: Instant) -> Vec<u64> {
    let filler = "x".repeat(MESSAGE_BYTES - 64);
    let mut acknowledged = Vec::new();
    while Instant::now() < until {
        let body = json!({"message": filler, "room": room}).to_string();
        let answer = http(
            server.addr,
            "POST",
            "/chat/send/",
            Some(body.as_bytes()),
            &[],
        )
        .await;
        assert!(
            acceptable(answer.status),
            "{}: {}",
            answer.status,
            answer.body
        );
        if answer.status == 200 {
            acknowledged.push(answer.json()["id"].as_u64().expect("id"));
        }
    }
    acknowledged
}

/// Publishes 1 MiB messages over a WebSocket as fast as it takes them, reading the echoes
/// meanwhile; the ids echoed (a refused message comes back as an error frame instead). A
/// publisher that reads its echoes slower than it sends is itself a slow consumer and may be
/// closed: what was echoed until then counts.
async fn ws_publisher(server: &Server, room: &'static str, until: Instant) -> Vec<u64> {
    use futures_util::{SinkExt, StreamExt};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let client = server.connect(&format!("/ws/chat/{room}/?meta=1")).await;
    let (mut sink, mut stream) = client.ws.split();
    // usize::MAX while still sending.
    let sent = AtomicUsize::new(usize::MAX);
    let sender = async {
        let filler = "x".repeat(MESSAGE_BYTES - 64);
        let mut count = 0;
        while Instant::now() < until {
            let frame = json!({ "message": filler }).to_string();
            if sink
                .send(tokio_websockets::Message::text(frame))
                .await
                .is_err()
            {
                break;
            }
            count += 1;
        }
        sent.store(count, Ordering::SeqCst);
    };
    let reader = async {
        let (mut echoed, mut answered) = (Vec::new(), 0);
        loop {
            if answered >= sent.load(Ordering::SeqCst) {
                break;
            }
            let next = tokio::time::timeout(crate::support::PATIENCE, stream.next()).await;
            let frame = match next {
                Ok(Some(Ok(frame))) => frame,
                Ok(_) => break, // Closed: a slow consumer too.
                Err(_) => panic!("{room}: no echo in time"),
            };
            let Some(text) = frame.as_text() else {
                continue;
            };
            let value: Value = serde_json::from_str(text).expect("JSON");
            match value["id"].as_u64() {
                Some(id) => echoed.push(id),
                None => assert!(acceptable(503) && value["error"].is_string(), "{value}"),
            }
            answered += 1;
        }
        echoed
    };
    tokio::join!(sender, reader).1
}

/// Reads the room's latest 1,000 messages, page after page, as long as the flood lasts.
async fn history_reader(server: &Server, room: &str, until: Instant) {
    while Instant::now() < until {
        let answer = server
            .http(
                "GET",
                &format!("/chat/history/?room={room}&limit=1000"),
                None,
            )
            .await;
        assert!(
            acceptable(answer.status),
            "{}: {}",
            answer.status,
            answer.body
        );
    }
}

async fn stored_ids(server: &Server, room: &str) -> BTreeSet<u64> {
    let mut ids = BTreeSet::new();
    let mut after = 0;
    loop {
        let page: Value = server
            .http(
                "GET",
                &format!("/chat/history/?room={room}&limit=1000&after={after}"),
                None,
            )
            .await
            .json();
        let items = page["chat_history"].as_array().expect("list").clone();
        let Some(last) = items.last() else { break };
        after = last["id"].as_u64().expect("id");
        ids.extend(items.iter().map(|item| item["id"].as_u64().expect("id")));
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn non_readers_huge_messages_and_big_history_pages_stay_bounded() {
    let server = Server::start(&[]).await;
    let mut silent = Vec::new();
    for room in ROOMS {
        for _ in 0..3 {
            silent.push(non_reader(&server, room).await);
        }
    }
    let until = Instant::now() + FLOOD_FOR;
    // Two publish over HTTP, two over WebSockets without waiting for their echoes.
    let publishers: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = Vec<u64>> + '_>>> =
        ROOMS
            .iter()
            .enumerate()
            .map(|(n, room)| match n % 2 {
                0 => Box::pin(publisher(&server, room, until)) as _,
                _ => Box::pin(ws_publisher(&server, room, until)) as _,
            })
            .collect();
    let readers: Vec<_> = (0..8)
        .map(|n| history_reader(&server, ROOMS[n % 4], until))
        .collect();
    let (acknowledged, _) = tokio::join!(
        futures_util::future::join_all(publishers),
        futures_util::future::join_all(readers)
    );
    let peak = peak_rss_mb(server.pid());
    let published: usize = acknowledged.iter().map(Vec::len).sum();
    eprintln!("peak RSS in the flood: {peak} MB, {published} messages of 1 MiB stored");
    assert!(peak < PEAK_RSS_BOUND_MB, "peak RSS {peak} MB");

    // Every non-reader was evicted as a slow consumer (faults.rs checks the 1008 a reader sees):
    // nobody is left in the rooms, and the server ends each connection. On Redis, Redis itself
    // may cut a node's subscription in this flood (see `acceptable`), so how much reached the
    // non-readers varies; eviction is the hub's, the same on both engines, and checked here.
    if !crate::support::on_redis() {
        // A room whose WebSocket publisher was itself closed early may not have sent its
        // non-readers past the bound (kernel buffers take several MiB first): top it up.
        let filler = json!({"message": "x".repeat(MESSAGE_BYTES - 64), "room": ""});
        for _ in 0..64 {
            let rooms = server.http("GET", "/chat/rooms/", None).await.json();
            let Some(listed) = rooms["rooms"].as_array().filter(|r| !r.is_empty()) else {
                break;
            };
            for room in listed {
                let mut body = filler.clone();
                body["room"] = room["room"].clone();
                server
                    .http("POST", "/chat/send/", Some(&body.to_string()))
                    .await;
            }
        }
        let rooms = server.http("GET", "/chat/rooms/", None).await.json();
        assert_eq!(rooms["rooms"], json!([]), "non-readers left their rooms");
        for mut stream in silent {
            let mut sink = tokio::io::sink();
            let drained = tokio::io::copy(&mut stream, &mut sink);
            let _ = tokio::time::timeout(crate::support::PATIENCE, drained)
                .await
                .expect("the server ends a non-reader's connection");
        }
    }

    // A WebSocket publisher that does not read its 1 MiB echoes fast enough (a loaded machine) is
    // a slow consumer too and may be closed before its first echo: its room then has nothing
    // acknowledged, which is fine; what was acknowledged anywhere must be stored.
    assert!(published > 0, "nothing published at all");
    for (room, acknowledged) in ROOMS.iter().zip(acknowledged) {
        let stored = stored_ids(&server, room).await;
        let missing: Vec<_> = acknowledged
            .iter()
            .filter(|id| !stored.contains(id))
            .collect();
        assert!(
            missing.is_empty(),
            "{room}: acknowledged but not stored: {missing:?}"
        );
    }
}
