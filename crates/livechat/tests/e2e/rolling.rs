//! A rolling restart: three nodes on one Redis behind nginx (the project's own site file), each
//! given SIGTERM in turn, started again and ready before the next, while clients read through
//! nginx and resume after each drop and messages are published through nginx. The full-size
//! version, with reconnect times and handshake rates, is `bench/rolling.py`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;
use tokio_websockets::ClientBuilder;

use crate::nginx::Nginx;
use crate::support::{Client, Event, PATIENCE, RedisServer, Server, eventually, http};

const ROOMS: [&str; 2] = ["roll_a", "roll_b"];
const CLIENTS: usize = 12;

/// A client through nginx that reconnects after every drop with `since=` its last id, after the
/// page's first wait (250-750 ms); every id it received, in order, and what else it was told.
fn resuming_reader(proxy: SocketAddr, room: &'static str) -> Reader {
    let reader = Reader {
        room,
        received: Arc::default(),
        reconnects: Arc::default(),
        told: Arc::default(),
    };
    let (ids, drops, told) = (
        reader.received.clone(),
        reader.reconnects.clone(),
        reader.told.clone(),
    );
    tokio::spawn(async move {
        let mut last = 0u64;
        loop {
            let uri = format!("ws://{proxy}/ws/chat/{room}/?meta=1&since={last}");
            if let Ok((ws, _)) = ClientBuilder::new().uri(&uri).unwrap().connect().await {
                let mut client = Client { ws };
                while let Event::Frame(frame) = client
                    .next_event_within(PATIENCE * 4)
                    .await
                    .expect("a frame or the close")
                {
                    match (frame["event"].as_str(), frame["id"].as_u64()) {
                        (None, Some(id)) => {
                            ids.lock().unwrap().push(id);
                            last = last.max(id);
                        }
                        (Some("gap" | "reset"), _) => told.lock().unwrap().push(frame.to_string()),
                        _ => {} // caught_up
                    }
                }
                *drops.lock().unwrap() += 1;
            }
            let wait = 250 + rand_below(500);
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
    });
    reader
}

struct Reader {
    room: &'static str,
    received: Arc<Mutex<Vec<u64>>>,
    reconnects: Arc<Mutex<u32>>,
    told: Arc<Mutex<Vec<String>>>,
}

fn rand_below(bound: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or(0);
    u64::from(nanos) % bound
}

/// Publishes through nginx, each message with a nonce and sent again with it until answered 200
/// (a node going away may refuse it, or nginx answer 502); returns each message's id.
async fn publish_until_stopped(
    proxy: SocketAddr,
    stop: watch::Receiver<bool>,
) -> BTreeMap<(String, u64), u64> {
    let mut acknowledged = BTreeMap::new();
    let mut n = 0u64;
    while !*stop.borrow() {
        let room = ROOMS[(n % 2) as usize];
        let body = json!({"room": room, "message": n, "nonce": format!("roll-{n}")}).to_string();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let answer = http(proxy, "POST", "/chat/send/", Some(body.as_bytes()), &[]).await;
            if answer.status == 200 {
                let id = answer.json()["id"].as_u64().expect("an id");
                acknowledged.insert((room.to_owned(), n), id);
                break;
            }
            assert!(
                [502, 503].contains(&answer.status),
                "publish {n}: {answer:?}"
            );
            assert!(
                tokio::time::Instant::now() < deadline,
                "publish {n} refused"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    acknowledged
}

#[tokio::test]
async fn each_node_restarted_in_turn_loses_and_doubles_nothing() {
    let redis = RedisServer::start().await;
    let trusted = ["--trusted-proxies", "127.0.0.1/32"];
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(Server::node(&redis, &trusted).await);
    }
    let addresses: Vec<SocketAddr> = nodes.iter().map(|node| node.addr).collect();
    let proxy = Nginx::start(&addresses).await;
    let (stop, stopped) = watch::channel(false);
    let readers: Vec<Reader> = (0..CLIENTS)
        .map(|n| resuming_reader(proxy.addr, ROOMS[n % 2]))
        .collect();
    let publishing = tokio::spawn(publish_until_stopped(proxy.addr, stopped));
    tokio::time::sleep(Duration::from_millis(500)).await;

    for node in &mut nodes {
        let status = node.stop().await;
        assert!(status.success(), "exit status {status:?} after SIGTERM");
        node.restart().await;
        eventually("the restarted node is ready", || async {
            node.http("GET", "/readyz", None).await.status == 200
        })
        .await;
        // Its clients are back on the others before the next one goes.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    stop.send(true).unwrap();
    let acknowledged = publishing.await.expect("publisher");
    for room in ROOMS {
        let history = nodes[0].history(&format!("?room={room}&limit=1000")).await;
        let ids: Vec<u64> = history
            .iter()
            .map(|message| message["id"].as_u64().unwrap())
            .collect();
        // Each acknowledged message is stored once, under the id it was acknowledged with.
        for ((of, n), id) in &acknowledged {
            if of == room {
                let copies: Vec<_> = history
                    .iter()
                    .filter(|message| message["message"] == json!(n))
                    .collect();
                assert_eq!(copies.len(), 1, "message {n} stored once");
                assert_eq!(copies[0]["id"].as_u64(), Some(*id));
            }
        }
        let last = *ids.last().expect("messages");
        for reader in readers.iter().filter(|reader| reader.room == room) {
            eventually("every client has the room's last message", || async {
                reader.received.lock().unwrap().last() == Some(&last)
            })
            .await;
            assert_eq!(*reader.told.lock().unwrap(), Vec::<String>::new());
            let got = reader.received.lock().unwrap().clone();
            assert_eq!(got, ids, "a client has every message once, in order");
            assert!(
                *reader.reconnects.lock().unwrap() >= 1,
                "the client was moved at least once"
            );
        }
    }
}
