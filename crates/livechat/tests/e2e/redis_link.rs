//! A broken link between a node and Redis (see `fault_proxy`): latency, a stall that nothing
//! closes, a connection cut in the middle of a reply. Node A reaches Redis through the proxy,
//! node B directly; clients on both read one room while messages are published through both.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::fault_proxy::FaultProxy;
use crate::support::{Client, Event, PATIENCE, RedisServer, Server, eventually};

/// The nodes' `LIVECHAT_REDIS_TIMEOUT`.
const TIMEOUT: Duration = Duration::from_secs(1);

/// A node checks which nodes are alive at least this often, so a stall shows within this plus
/// the timeout even on an idle node.
const CHECK_EVERY: Duration = Duration::from_secs(1);

const KEY: &str = "redis-link-e2e-server-key";

/// The most messages the publisher sends (one history page holds them all).
const MOST: u64 = 500;

/// Every frame with an id a client received, in the order received.
fn reader(mut client: Client) -> Arc<Mutex<Vec<Value>>> {
    let frames = Arc::new(Mutex::new(Vec::new()));
    let seen = frames.clone();
    tokio::spawn(async move {
        while let Some(event) = client.next_event_within(Duration::from_secs(3600)).await {
            match event {
                Event::Frame(frame) if frame.get("id").is_some() => {
                    seen.lock().unwrap().push(frame);
                }
                Event::Frame(_) => {}
                Event::Closed(code, reason) => panic!("a reader was closed: {code} {reason}"),
            }
        }
    });
    frames
}

/// The ids of the frames a reader received, in the order received.
fn received_ids(frames: &Mutex<Vec<Value>>) -> Vec<u64> {
    frames
        .lock()
        .unwrap()
        .iter()
        .map(|frame| frame["id"].as_u64().expect("an id"))
        .collect()
}

async fn ready(node: &Server) -> bool {
    node.http("GET", "/readyz", None).await.status == 200
}

/// Publishes `n` through `node` with a nonce, again with the same nonce after each refusal (a
/// refused publish may have been stored, as when the reply was cut); its id and how many tries
/// it took.
async fn publish(node: &Server, n: u64) -> (u64, u32) {
    let body = json!({"room": "link", "message": n, "nonce": format!("n-{n}")}).to_string();
    let mut tries = 0;
    let deadline = Instant::now() + PATIENCE * 4;
    loop {
        tries += 1;
        let answer = node.http("POST", "/chat/send/", Some(&body)).await;
        match answer.status {
            200 => return (answer.json()["id"].as_u64().expect("an id"), tries),
            503 => {}
            status => panic!("publish {n}: unexpected {status}: {answer:?}"),
        }
        assert!(Instant::now() < deadline, "publish {n} never accepted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Slow answers, a stall that closes nothing, a reply cut in half: node A is not ready while its
/// writes cannot complete, notices the stall within its Redis timeout, heals by itself, and
/// every client on both nodes ends with every message exactly once and in order.
#[tokio::test]
async fn a_broken_link_to_redis_loses_and_doubles_nothing_and_heals_by_itself() {
    let redis = RedisServer::start().await;
    let proxy = FaultProxy::start(redis.port).await;
    let timeout = format!("{}ms", TIMEOUT.as_millis());
    let args = ["--redis-timeout", timeout.as_str(), "--api-key", KEY];
    let a = Arc::new(Server::node_via(&proxy.url(), &args).await);
    let b = Arc::new(Server::node(&redis, &args).await);
    let mut readers = Vec::new();
    for node in [&a, &b, &a, &b] {
        let client = node.connect("/ws/chat/link/?meta=1").await;
        readers.push(reader(client));
    }
    eventually("A is ready", || ready(&a)).await;

    // Messages go through A and B in turn, each one after the other's answer, for as long as
    // the faults last.
    let (stop, stopped) = watch::channel(false);
    let publishing = {
        let (a, b) = (a.clone(), b.clone());
        tokio::spawn(async move {
            let mut acknowledged = BTreeMap::new();
            let mut retried = 0;
            let mut n = 0u64;
            while (!*stopped.borrow() || n < 40) && n < MOST {
                let node = if n.is_multiple_of(2) { &a } else { &b };
                let (id, tries) = publish(node, n).await;
                acknowledged.insert(n, id);
                retried += tries - 1;
                n += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (acknowledged, retried)
        })
    };

    // Latency below the timeout: slower, still ready.
    proxy.set_latency(Duration::from_millis(200));
    for n in 1_000..1_005 {
        let started = Instant::now();
        assert!(ready(&a).await, "ready with 200 ms of latency");
        let (_, tries) = publish(&a, n).await;
        assert_eq!(tries, 1, "a publish through a slow link is accepted");
        assert!(started.elapsed() >= Duration::from_millis(200));
    }
    proxy.set_latency(Duration::ZERO);

    // A stall: nothing is answered and nothing is closed.
    let accepted_before = proxy.accepted();
    proxy.stall();
    let stalled = Instant::now();
    eventually("A is not ready while its link is stalled", || async {
        !ready(&a).await
    })
    .await;
    let noticed = stalled.elapsed();
    eprintln!("stall noticed after {noticed:?}");
    assert!(
        noticed < TIMEOUT + CHECK_EVERY + Duration::from_secs(2),
        "the stall is noticed by the Redis timeout, not the kernel's: {noticed:?}"
    );
    let body = json!({"room": "link", "message": "in the stall"}).to_string();
    let refused = a.http("POST", "/chat/send/", Some(&body)).await;
    assert_eq!(refused.status, 503, "{refused:?}");
    assert!(
        refused.json()["error"].as_str().is_some(),
        "a clear error: {refused:?}"
    );
    assert!(!ready(&a).await, "still not ready: writes cannot complete");
    assert!(ready(&b).await, "B, on its own link, is ready throughout");
    // The network heals for new connections; the stalled one stays dead.
    proxy.release();
    let released = Instant::now();
    eventually("A is ready again by itself", || ready(&a)).await;
    eprintln!("ready {:?} after the stall ended", released.elapsed());
    assert!(
        proxy.accepted() > accepted_before,
        "A made a new connection"
    );

    // A reply cut in half: the connection closes mid-reply.
    for _ in 0..3 {
        let cuts = proxy.cuts();
        proxy.cut_next_reply();
        let page = a
            .http("GET", "/chat/history/?room=link&limit=500", None)
            .await;
        assert!([200, 503].contains(&page.status), "{page:?}");
        eventually("a reply was cut", || async { proxy.cuts() > cuts }).await;
        eventually("A is ready after the cut", || ready(&a)).await;
    }

    stop.send(true).unwrap();
    let (acknowledged, retried) = publishing.await.expect("publisher");
    eprintln!(
        "{} messages acknowledged, {retried} tries refused and sent again",
        acknowledged.len()
    );
    assert!(retried > 0, "some publishes through A were refused");

    // History holds each message once (the nonce made retries idempotent).
    let history = b.history("?room=link&limit=1000").await;
    let mut stored: BTreeMap<String, u64> = BTreeMap::new();
    for message in &history {
        let id = message["id"].as_u64().expect("an id");
        let text = message["message"].to_string();
        if message["message"].is_u64() && message["message"].as_u64() < Some(1_000) {
            assert!(
                stored.insert(text.clone(), id).is_none(),
                "{text} stored twice: {history:?}"
            );
        }
    }
    for (n, id) in &acknowledged {
        assert_eq!(stored.get(&n.to_string()), Some(id), "message {n} kept");
    }
    let ids: BTreeSet<u64> = history
        .iter()
        .map(|message| message["id"].as_u64().unwrap())
        .collect();
    let last = *ids.last().expect("messages");

    // Every reader, on either node, has every stored message once, in order.
    for (index, frames) in readers.iter().enumerate() {
        eventually("every reader has the last message", || async {
            frames
                .lock()
                .unwrap()
                .iter()
                .any(|frame| frame["id"].as_u64() == Some(last))
        })
        .await;
        let got = received_ids(frames);
        assert!(
            got.windows(2).all(|pair| pair[0] < pair[1]),
            "reader {index}: in order, none twice: {got:?}"
        );
        let got: BTreeSet<u64> = got.into_iter().collect();
        assert_eq!(got, ids, "reader {index} has exactly what history holds");
    }

    // A's new connection listens to the control channel too: B's moderator reaches A's users.
    let mut eve = a.connect("/ws/chat/link/?name=eve").await;
    let order = json!({"user": "eve"});
    let answer = b.call(KEY, "POST", "/api/disconnect", Some(order)).await;
    assert_eq!(answer.status, 202, "{answer:?}");
    assert_eq!(eve.recv_close().await, (4003, "disconnected".to_owned()));
}

/// Rooms node A holds a member of in `a_node_back_from_a_broken_link_catches_up_every_room`.
const MANY_ROOMS: usize = 300;

/// Node A, a member in each of 300 rooms, loses its link to Redis (a stall) while messages are
/// published to every room through node B; once the link heals, A catches every room up (the
/// rooms read together, not one after the other) and each client has every message of its
/// room once, in order, live ones and missed ones alike. However many times the stalled link
/// was replaced, the heal is caught up once.
#[tokio::test]
async fn a_node_back_from_a_broken_link_catches_up_every_room() {
    let redis = RedisServer::start().await;
    let proxy = FaultProxy::start(redis.port).await;
    let timeout = format!("{}ms", TIMEOUT.as_millis());
    let args = ["--redis-timeout", timeout.as_str()];
    let a = Server::node_via(&proxy.url(), &args).await;
    let b = Server::node(&redis, &args).await;
    let room = |n: usize| format!("many{n}");
    let mut readers = Vec::new();
    for n in 0..MANY_ROOMS {
        let client = a.connect(&format!("/ws/chat/{}/?meta=1", room(n))).await;
        readers.push(reader(client));
    }
    eventually("A is ready", || ready(&a)).await;
    for n in 0..MANY_ROOMS {
        b.post_message(&room(n), json!("live")).await;
    }

    proxy.stall();
    eventually("A is not ready while its link is stalled", || async {
        !ready(&a).await
    })
    .await;
    for round in 0..3 {
        for n in 0..MANY_ROOMS {
            b.post_message(&room(n), json!(format!("missed {round}")))
                .await;
        }
    }
    // Long enough for commands to time out on a replaced connection too: the link is replaced
    // more than once, each time with a disconnection notice (covered below).
    eventually("the stalled link was replaced twice", || async {
        a.log_count(&["connection is replaced"]) >= 2
    })
    .await;
    let caught_up_before = a.log_count(&["subscriptions caught up"]);
    // Disconnection notices that asked for a catch-up when none was pending.
    let fresh_notices = || a.log_count(&["catching up once Redis answers", "pending=false"]);
    let fresh_before = fresh_notices();
    proxy.release();
    let released = Instant::now();
    eventually("A caught up", || async {
        a.log_count(&["subscriptions caught up"]) > caught_up_before
    })
    .await;
    let healed = released.elapsed();
    let line = a.last_logged(&["subscriptions caught up"]).expect("logged");
    eprintln!("A caught up {MANY_ROOMS} rooms {healed:?} after the link healed: {line}");
    let rounds: usize = line
        .split("rounds=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .expect("the rounds of requests are logged");
    assert!(
        rounds < MANY_ROOMS / 10,
        "the rooms are read together, not one after the other: {line}"
    );

    for (n, frames) in readers.iter().enumerate() {
        let stored: Vec<u64> = b
            .history(&format!("?room={}&limit=100", room(n)))
            .await
            .iter()
            .map(|message| message["id"].as_u64().expect("an id"))
            .collect();
        assert_eq!(stored.len(), 4, "room {n}: {stored:?}");
        eventually("the reader has its room's last message", || async {
            frames.lock().unwrap().len() >= stored.len()
        })
        .await;
        let got = received_ids(frames);
        assert_eq!(got, stored, "room {n}: every message once, in order");
    }
    eprintln!("all {MANY_ROOMS} readers have every message once, in order");

    // The notices of the replacements were queued while a catch-up waited for Redis. Once A has
    // taken them all, the heal was caught up once: no notice taken since the link healed asked
    // for another catch-up.
    let replaced = a.log_count(&["connection is replaced"]);
    eventually("A took every disconnection notice", || async {
        a.log_count(&["Redis disconnection notice"]) >= replaced
    })
    .await;
    let covered = a.log_count(&["Redis disconnection notice", "covered by the catch-up"]);
    eprintln!("the stalled link was replaced {replaced} times; {covered} notices covered");
    assert_eq!(
        fresh_notices(),
        fresh_before,
        "a notice asked for a second catch-up"
    );
    assert_eq!(
        a.log_count(&["subscriptions caught up"]) - caught_up_before,
        1,
        "one catch-up per heal"
    );
}
