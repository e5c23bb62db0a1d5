//! The Django Channels layer bridge (docs/channels.md) without Python: the layer's keys written
//! and read here in `channels_redis`' format (the server's own `bridge::layer`, checked against
//! bytes `channels_redis` wrote in its unit tests). tests/channels has the real Django stack.

use redis::AsyncCommands;
use serde_json::{Value, json};

use livechat::bridge::layer::{Codec, now_seconds};

use crate::support::{RedisServer, Server, eventually, free_port};

async fn layer_connection(layer: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(layer.url())
        .expect("a Redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("the layer's Redis")
}

/// The sum of a metric's series whose labels include `labels`.
async fn metric(server: &Server, name: &str, labels: &str) -> f64 {
    let text = server.http("GET", "/metrics", None).await.body;
    text.lines()
        .filter(|line| line.starts_with(name) && line.contains(labels))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn object(value: Value) -> serde_json::Map<String, Value> {
    match value {
        Value::Object(object) => object,
        _ => panic!("not an object"),
    }
}

#[tokio::test]
async fn layer_messages_livechat_cannot_take_are_counted_logged_and_dropped() {
    let layer = RedisServer::start_volatile().await;
    let url = layer.url();
    let server = Server::start(&[
        "--channels-layer",
        &url,
        "--channels-rooms",
        "lobby",
        "--max-message-bytes",
        "1000",
    ])
    .await;
    let mut client = server.connect("/ws/chat/lobby/?meta=1").await;
    let codec = Codec::new(&[], 60);
    let ours = ["livechat!chat_lobby"];
    let bodies = [
        b"twelve bytesnot msgpack at all".to_vec(),
        codec.seal(&object(json!({"type": "user.joined", "message": "x"})), &ours),
        codec.seal(&object(json!({"type": "chat.message", "message": "p".repeat(2000)})), &ours),
        codec.seal(&object(json!({"type": "chat.message", "text": "no message key"})), &ours),
        codec.seal(&object(json!({"type": "chat_message", "message": {"fine": true}, "user": {"id": 7, "name": "Ann"}})), &ours),
    ];
    let mut connection = layer_connection(&layer).await;
    for (n, body) in bodies.iter().enumerate() {
        let _: () = connection
            .zadd(
                "asgilivechat!",
                body.as_slice(),
                now_seconds() + n as f64 / 1000.0,
            )
            .await
            .unwrap();
    }
    let frame = client.recv().await;
    assert_eq!(frame["message"], json!({"fine": true}));
    assert_eq!(frame["id"], 1);
    assert_eq!(frame["user"], json!({"id": "7", "name": "Ann"}));
    let received = "livechat_channels_received_total";
    eventually("every layer message counted", || async {
        metric(&server, received, "outcome=\"published\"").await == 1.0
    })
    .await;
    assert_eq!(
        metric(&server, received, "outcome=\"malformed\"").await,
        2.0
    );
    assert_eq!(metric(&server, received, "outcome=\"ignored\"").await, 1.0);
    assert_eq!(
        metric(&server, received, "outcome=\"oversized\"").await,
        1.0
    );
    assert!(server.logged(&["oversized", "2002 bytes"]));
    assert!(server.logged(&["malformed", "logged at most once a minute"]));
    // Nothing taken is left in flight.
    let in_flight: u64 = connection.zcard("asgilivechat!$inflight").await.unwrap();
    assert_eq!(in_flight, 0);
    client.expect_silence().await;
}

#[tokio::test]
async fn livechat_messages_reach_the_group_in_channels_redis_format_and_not_the_bridge() {
    let layer = RedisServer::start_volatile().await;
    let url = layer.url();
    let server = Server::start(&["--channels-layer", &url, "--channels-meta", "on"]).await;
    let mut connection = layer_connection(&layer).await;
    // A consumer of the app in the room's group, as group_add leaves it.
    let _: () = connection
        .zadd("asgi:group:chat_lobby", "app.consumer", now_seconds())
        .await
        .unwrap();
    let mut client = server.connect("/ws/chat/lobby/?meta=1&name=Dana").await;
    eventually("the bridge in the room's group", || async {
        let score: Option<f64> = layer_connection(&layer)
            .await
            .zscore("asgi:group:chat_lobby", "livechat!chat_lobby")
            .await
            .unwrap();
        score.is_some()
    })
    .await;
    client
        .send_json(json!({"message": {"hello": [1, 2.5, null]}}))
        .await;
    assert_eq!(client.recv().await["id"], 1);
    eventually("the consumer's message", || async {
        let count: u64 = layer_connection(&layer)
            .await
            .zcard("asgiapp.consumer")
            .await
            .unwrap();
        count == 1
    })
    .await;
    let bodies: Vec<Vec<u8>> = connection.zrange("asgiapp.consumer", 0, -1).await.unwrap();
    let message = Codec::new(&[], 60).open(&bodies[0]).unwrap();
    assert_eq!(message.channels, ["app.consumer"]);
    let ts = message.body["ts"].clone();
    assert!(ts.as_u64().is_some());
    assert_eq!(
        Value::Object(message.body),
        json!({"type": "chat.message", "message": {"hello": [1, 2.5, null]}, "id": 1, "ts": ts, "user": {"name": "Dana"}})
    );
    let ttl: i64 = connection.ttl("asgiapp.consumer").await.unwrap();
    assert!((1..=60).contains(&ttl), "{ttl}");
    // livechat's own channel was left out: no echo back into the room.
    let echoed: u64 = connection.zcard("asgilivechat!").await.unwrap();
    assert_eq!(echoed, 0);
    client.expect_silence().await;
}

#[tokio::test]
async fn with_the_layer_unreachable_chat_goes_on_and_readyz_says_so() {
    let nowhere = format!("redis://127.0.0.1:{}/", free_port());
    let server = Server::start(&["--channels-layer", &nowhere, "--redis-timeout", "500ms"]).await;
    eventually("readyz to tell the layer is down", || async {
        let ready = server.http("GET", "/readyz", None).await;
        ready.status == 200 && ready.json()["channels_layer"]["status"] == "down"
    })
    .await;
    let ready = server.http("GET", "/readyz", None).await.json();
    assert_eq!(ready["status"], "ready");
    assert!(
        ready["channels_layer"]["reason"].as_str().is_some(),
        "{ready}"
    );
    let answer = server.post_message("lobby", json!("still here")).await;
    assert_eq!(answer["id"], 1);
    assert_eq!(
        server.history("?room=lobby").await[0]["message"],
        "still here"
    );
    assert_eq!(metric(&server, "livechat_channels_layer_up", "").await, 0.0);
    assert!(server.logged(&["the Channels layer's Redis does not answer"]));
}

#[tokio::test]
async fn what_a_dead_reader_left_in_flight_is_published_once() {
    let layer = RedisServer::start_volatile().await;
    let codec = Codec::new(&[], 60);
    let ours = ["livechat!chat_lobby"];
    let left = codec.seal(
        &object(json!({"type": "chat.message", "message": "left in flight"})),
        &ours,
    );
    let mut connection = layer_connection(&layer).await;
    let _: () = connection
        .zadd("asgilivechat!$inflight", left.as_slice(), now_seconds())
        .await
        .unwrap();
    let url = layer.url();
    let server = Server::start(&["--channels-layer", &url]).await;
    let history = || async { server.history("?room=lobby").await };
    eventually("the message left in flight published", || async {
        history().await.len() == 1
    })
    .await;
    let mut client = server.connect("/ws/chat/lobby/?meta=1").await;
    // The same body again (a reader that published it and died before saying so), then another.
    let next = codec.seal(
        &object(json!({"type": "chat.message", "message": "next"})),
        &ours,
    );
    for body in [&left, &next] {
        let _: () = connection
            .zadd("asgilivechat!", body.as_slice(), now_seconds())
            .await
            .unwrap();
    }
    let frame = client.recv().await;
    assert_eq!(
        (frame["id"].clone(), frame["message"].clone()),
        (json!(2), json!("next"))
    );
    let stored: Vec<Value> = history()
        .await
        .iter()
        .map(|item| item["message"].clone())
        .collect();
    assert_eq!(stored, [json!("left in flight"), json!("next")]);
}

#[tokio::test]
async fn another_node_reads_the_layer_when_the_reader_is_killed() {
    let redis = RedisServer::start_volatile().await;
    let url = redis.url();
    let args = [
        "--channels-layer",
        url.as_str(),
        "--channels-rooms",
        "lobby",
    ];
    let mut nodes = [
        Server::node(&redis, &args).await,
        Server::node(&redis, &args).await,
    ];
    let lease = || async {
        let holder: Option<String> = layer_connection(&redis)
            .await
            .get("asgilivechat!$lease")
            .await
            .unwrap();
        holder
    };
    eventually("a node to hold the lease", || async {
        lease().await.is_some()
    })
    .await;
    let holder = lease().await.unwrap();
    let reader = nodes
        .iter()
        .position(|node| holder.starts_with(&format!("node-{}-", node.pid())))
        .expect("the lease names one of the nodes");
    nodes[reader].kill9().await;
    let survivor = &nodes[1 - reader];
    let mut client = survivor.connect("/ws/chat/lobby/?meta=1").await;
    let body = Codec::new(&[], 60).seal(
        &object(json!({"type": "chat.message", "message": "after the reader died"})),
        &["livechat!chat_lobby"],
    );
    let _: () = layer_connection(&redis)
        .await
        .zadd("asgilivechat!", body.as_slice(), now_seconds())
        .await
        .unwrap();
    let frame = client.recv().await;
    assert_eq!(frame["message"], "after the reader died");
    assert!(
        lease()
            .await
            .unwrap()
            .starts_with(&format!("node-{}-", survivor.pid()))
    );
}
