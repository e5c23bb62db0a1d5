//! Webhooks (docs/hooks.md): events told to the app after the fact, signed, batched, in order
//! per room, at least once, durable across the app's outages and a `kill -9` of the node, and
//! bounded. The app here is a small HTTP server in the test, on a real port, that checks each
//! signature as a receiver would and can be told to fail.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::support::{RedisServer, Server, eventually};

const SECRET: &str = "webhook-e2e-secret";

/// The app's receiving end: every event it acknowledged, in the order received.
#[derive(Clone, Default)]
struct Receiver {
    events: Arc<Mutex<Vec<Value>>>,
    /// Answer 500 (and keep nothing) while set.
    down: Arc<AtomicBool>,
    requests: Arc<AtomicUsize>,
    bad_signatures: Arc<AtomicUsize>,
}

impl Receiver {
    async fn start() -> (Receiver, SocketAddr) {
        let receiver = Receiver::default();
        let router = axum::Router::new()
            .route("/events", post(receive))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        (receiver, addr)
    }

    fn events(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }

    /// The events of `kind`, once each (by id), in the order first received.
    fn distinct(&self, kind: &str) -> Vec<Value> {
        let mut seen = std::collections::HashSet::new();
        self.events()
            .into_iter()
            .filter(|event| event["type"] == kind && seen.insert(event["id"].clone()))
            .collect()
    }

    fn messages(&self) -> Vec<Value> {
        self.distinct("message")
            .into_iter()
            .map(|event| event["message"]["message"].clone())
            .collect()
    }
}

/// Checks `X-Livechat-Signature` as docs/hooks.md tells a receiver to.
fn signed(headers: &HeaderMap, body: &[u8]) -> bool {
    let Some(header) = headers
        .get("x-livechat-signature")
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let parts: std::collections::HashMap<&str, &str> = header
        .split(',')
        .filter_map(|part| part.split_once('='))
        .collect();
    let (Some(t), Some(v1)) = (parts.get("t"), parts.get("v1")) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    expected == *v1 && t.parse::<u64>().is_ok_and(|t| now.abs_diff(t) <= 300)
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    receiver.requests.fetch_add(1, Ordering::SeqCst);
    if !signed(&headers, &body) {
        receiver.bad_signatures.fetch_add(1, Ordering::SeqCst);
        return StatusCode::UNAUTHORIZED;
    }
    if receiver.down.load(Ordering::SeqCst) {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let batch: Value = serde_json::from_slice(&body).unwrap();
    let events = batch["events"].as_array().unwrap();
    assert!(
        !events.is_empty() && events.len() <= 100,
        "batches of 1 to 100"
    );
    receiver
        .events
        .lock()
        .unwrap()
        .extend(events.iter().cloned());
    StatusCode::OK
}

fn webhook_args(addr: SocketAddr) -> Vec<String> {
    vec![
        "--webhook-url".into(),
        format!("http://{addr}/events"),
        "--webhook-secret".into(),
        SECRET.into(),
    ]
}

async fn with_webhook(addr: SocketAddr, extra: &[&str]) -> Server {
    let mut args = webhook_args(addr);
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start(&args).await
}

/// Messages, joins and leaves, rooms occupied and vacated: each told once, signed, with ids.
#[tokio::test]
async fn the_app_is_told_what_happened() {
    let (receiver, addr) = Receiver::start().await;
    let server = with_webhook(addr, &[]).await;
    let mut ada = server.connect("/ws/chat/told/?name=Ada").await;
    for n in 1..=3 {
        ada.send_json(json!({"message": n})).await;
        ada.recv().await;
    }
    server.post_message("told", json!("over http")).await;
    // Who comes and goes is decided once a second: a visit shorter than that may tell nothing.
    eventually("the join told", || async {
        receiver.distinct("join").len() == 1
    })
    .await;
    drop(ada);
    eventually("every event told", || async {
        receiver.distinct("room_vacated").len() == 1
    })
    .await;
    assert_eq!(
        receiver.messages(),
        [json!(1), json!(2), json!(3), json!("over http")]
    );
    let kinds: Vec<Value> = receiver
        .events()
        .iter()
        .map(|event| event["type"].clone())
        .collect();
    let at = |kind: &str| kinds.iter().position(|k| k == kind).unwrap();
    assert!(
        at("room_occupied") < at("join") && at("leave") < at("room_vacated"),
        "{kinds:?}"
    );
    assert_eq!(receiver.distinct("join")[0]["user"], json!({"name": "Ada"}));
    assert_eq!(
        receiver.distinct("leave")[0]["user"],
        json!({"name": "Ada"})
    );
    let message = &receiver.distinct("message")[0];
    assert_eq!(message["room"], "told");
    assert_eq!(message["message"]["id"], 1);
    assert!(message["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!(receiver.bad_signatures.load(Ordering::SeqCst), 0);
    // Joins and leaves of the room's one connection only: nothing else.
    assert_eq!(receiver.events().len(), 8, "{:?}", receiver.events());
}

/// Edits, deletions, bans and disconnections are told too, with who did them.
#[tokio::test]
async fn changes_and_moderation_are_told() {
    let (receiver, addr) = Receiver::start().await;
    let key = "webhook-e2e-server-key";
    let server = with_webhook(addr, &["--api-key", key]).await;
    let mut ada = server.connect("/ws/chat/moderated/?meta=1&name=Ada").await;
    ada.send_json(json!({"message": "tpyo"})).await;
    let id = ada.recv().await["id"].as_u64().unwrap();
    ada.send_json(json!({"edit": id, "message": "typo"})).await;
    ada.send_json(json!({"delete": id})).await;
    while ada.recv().await["event"] != "deleted" {}
    let bearer = format!("Bearer {key}");
    let headers = [("Authorization", bearer.as_str())];
    for (path, body) in [
        (
            "/api/bans",
            json!({"user": "Ada", "mode": "mute", "reason": "calm down"}),
        ),
        ("/api/disconnect", json!({"user": "Ada", "reason": "bye"})),
    ] {
        let body = body.to_string();
        let answer =
            crate::support::http(server.addr, "POST", path, Some(body.as_bytes()), &headers).await;
        assert!(answer.status < 300, "{answer:?}");
    }
    eventually("every change told", || async {
        receiver.distinct("disconnect").len() == 1
    })
    .await;
    let edited = &receiver.distinct("edited")[0];
    assert_eq!(
        (
            &edited["room"],
            &edited["id"],
            &edited["message"],
            &edited["by"]
        ),
        (
            &json!("moderated"),
            &json!(id),
            &json!("typo"),
            &json!({"name": "Ada"})
        )
    );
    assert!(edited["edited_ts"].as_u64().is_some());
    assert_eq!(receiver.distinct("deleted")[0]["id"], json!(id));
    let ban = &receiver.distinct("ban")[0];
    assert_eq!(ban["room"], Value::Null);
    assert_eq!(
        (
            &ban["ban"]["user"],
            &ban["ban"]["mode"],
            &ban["ban"]["created_by"]
        ),
        (&json!("Ada"), &json!("mute"), &json!("server"))
    );
    let disconnect = &receiver.distinct("disconnect")[0];
    assert_eq!(
        (
            &disconnect["user"],
            &disconnect["reason"],
            &disconnect["reconnect"]
        ),
        (&json!("Ada"), &json!("bye"), &json!(true))
    );
}

/// The app down for a while: events wait, then come in order, each at least once.
#[tokio::test]
async fn an_app_that_is_down_gets_everything_later_in_order() {
    let (receiver, addr) = Receiver::start().await;
    receiver.down.store(true, Ordering::SeqCst);
    let server = with_webhook(addr, &["--webhook-events", "message"]).await;
    for n in 0..150 {
        server.post_message("outage", json!(n)).await;
    }
    eventually("the app was tried", || async {
        receiver.requests.load(Ordering::SeqCst) >= 2
    })
    .await;
    assert!(receiver.events().is_empty());
    // The gauge is read at each try: a try may have come while the messages were still being
    // posted, so wait for one that saw them all.
    eventually("the outbox says 150 wait", || async {
        let metrics = server.http("GET", "/metrics", None).await.body;
        metrics.contains("livechat_webhook_pending 150")
    })
    .await;
    receiver.down.store(false, Ordering::SeqCst);
    eventually("all delivered", || async {
        receiver.messages().len() == 150
    })
    .await;
    assert_eq!(
        receiver.messages(),
        (0..150).map(|n| json!(n)).collect::<Vec<_>>()
    );
    eventually("the outbox emptied", || async {
        server
            .http("GET", "/metrics", None)
            .await
            .body
            .contains("livechat_webhook_pending 0")
    })
    .await;
}

/// A `kill -9` with events waiting loses none of them: they come after the restart.
#[tokio::test]
async fn events_waiting_survive_kill_9() {
    let (receiver, addr) = Receiver::start().await;
    receiver.down.store(true, Ordering::SeqCst);
    let mut server = with_webhook(addr, &["--webhook-events", "message"]).await;
    for n in 0..20 {
        server.post_message("crash", json!(n)).await;
    }
    server.kill9().await;
    receiver.down.store(false, Ordering::SeqCst);
    server.restart().await;
    eventually("delivered after the restart", || async {
        receiver.messages().len() == 20
    })
    .await;
    assert_eq!(
        receiver.messages(),
        (0..20).map(|n| json!(n)).collect::<Vec<_>>()
    );
}

/// A full outbox drops new events, counts them, says so once, and takes events again when
/// the app has taken the waiting ones.
#[tokio::test]
async fn a_full_outbox_drops_new_events_loudly() {
    let (receiver, addr) = Receiver::start().await;
    receiver.down.store(true, Ordering::SeqCst);
    let server = with_webhook(
        addr,
        &[
            "--webhook-events",
            "message",
            "--webhook-outbox-bytes",
            "2000",
        ],
    )
    .await;
    for n in 0..40 {
        server
            .post_message("full", json!(format!("message number {n}")))
            .await;
    }
    eventually("the drop counted and said", || async {
        let metrics = server.http("GET", "/metrics", None).await.body;
        metrics.lines().any(|line| {
            line.starts_with("livechat_webhook_events_dropped_total ") && !line.ends_with(" 0")
        }) && server.logged(&["webhook outbox full"])
    })
    .await;
    receiver.down.store(false, Ordering::SeqCst);
    eventually("the kept ones delivered", || async {
        !receiver.messages().is_empty()
    })
    .await;
    let kept = receiver.messages();
    // The oldest were kept, in order; the newest dropped.
    assert_eq!(kept[0], json!("message number 0"));
    assert!(kept.len() < 40);
    eventually("recording again", || async {
        server.logged(&["events are recorded again"])
    })
    .await;
    server.post_message("full", json!("after")).await;
    eventually("a new event told", || async {
        receiver.messages().contains(&json!("after"))
    })
    .await;
}

/// On two Redis nodes, one sends; killed with events unacknowledged, the other takes over and
/// sends them (claimed), then its own.
#[tokio::test]
async fn another_node_takes_over_sending_when_the_sender_dies() {
    let (receiver, addr) = Receiver::start().await;
    receiver.down.store(true, Ordering::SeqCst);
    let redis = RedisServer::start().await;
    let mut args = webhook_args(addr);
    args.extend(["--webhook-events".to_owned(), "message".to_owned()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut first = Server::node(&redis, &args).await;
    // The first node takes the lease (and reads this) before the second exists.
    first.post_message("relay", json!("warm-up")).await;
    eventually("the first node tries to send", || async {
        receiver.requests.load(Ordering::SeqCst) > 0
    })
    .await;
    let second = Server::node(&redis, &args).await;
    for n in 0..30 {
        let node = if n % 2 == 0 { &first } else { &second };
        node.post_message("relay", json!(n)).await;
    }
    first.kill9().await;
    receiver.down.store(false, Ordering::SeqCst);
    eventually("delivered by the survivor", || async {
        receiver.messages().len() == 31
    })
    .await;
    let mut expected = vec![json!("warm-up")];
    expected.extend((0..30).map(|n| json!(n)));
    assert_eq!(receiver.messages(), expected, "in order, once each");
    second.post_message("relay", json!("later")).await;
    eventually("and new ones", || async { receiver.messages().len() == 32 }).await;
}

/// On a Redis Cluster the outbox is in a slot of its own: a message's event is added by the node
/// right after the message is stored, and told as anywhere else.
#[tokio::test]
async fn a_redis_cluster_tells_the_app_too() {
    let (receiver, addr) = Receiver::start().await;
    let cluster = crate::support::RedisCluster::start().await;
    let urls = cluster.urls();
    let mut args = webhook_args(addr);
    args.extend(
        [
            "--redis-cluster",
            "--redis-url",
            &urls,
            "--webhook-events",
            "message",
        ]
        .map(str::to_owned),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(data.path(), &args).await;
    for room in ["a", "b", "c"] {
        for n in 0..3 {
            server.post_message(room, json!(format!("{room}{n}"))).await;
        }
    }
    eventually("told", || async { receiver.messages().len() == 9 }).await;
    for room in ["a", "b", "c"] {
        let in_room: Vec<Value> = receiver
            .distinct("message")
            .into_iter()
            .filter(|event| event["room"] == room)
            .map(|event| event["message"]["message"].clone())
            .collect();
        assert_eq!(
            in_room,
            (0..3)
                .map(|n| json!(format!("{room}{n}")))
                .collect::<Vec<_>>()
        );
    }
}
