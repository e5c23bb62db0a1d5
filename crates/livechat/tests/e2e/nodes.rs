//! Several nodes on one Redis: shared rooms with one order, one history, Redis outages, and a
//! node that dies. (Every other contract test also runs on the Redis engine: see `on_redis`.)

use serde_json::{Value, json};

use crate::support::{Client, RedisCluster, RedisServer, Server, eventually, peak_rss_kib};

async fn read_messages(client: &mut Client, count: usize) -> Vec<Value> {
    let mut seen = Vec::with_capacity(count);
    while seen.len() < count {
        seen.push(client.recv().await["message"].clone());
    }
    seen
}

async fn status(server: &Server, path: &str) -> u16 {
    server.http("GET", path, None).await.status
}

#[tokio::test]
async fn three_nodes_share_a_room_in_one_order_with_one_history() {
    let redis = RedisServer::start().await;
    let nodes = [
        Server::node(&redis, &[]).await,
        Server::node(&redis, &[]).await,
        Server::node(&redis, &[]).await,
    ];
    let mut elsewhere = nodes[1].join("elsewhere").await;
    let mut members = Vec::new();
    for node in &nodes {
        members.push(node.join("shared").await);
    }
    const PER_MEMBER: usize = 100;
    const OVER_HTTP: usize = 20;
    let total = 3 * PER_MEMBER + OVER_HTTP;
    let mut readers = Vec::new();
    for (index, mut member) in members.into_iter().enumerate() {
        readers.push(tokio::spawn(async move {
            for n in 0..PER_MEMBER {
                member
                    .send_json(json!({"message": {"node": index, "n": n}}))
                    .await;
            }
            read_messages(&mut member, total).await
        }));
    }
    for n in 0..OVER_HTTP {
        nodes[0].post_message("shared", json!({"http": n})).await;
    }
    let mut orders = Vec::new();
    for reader in readers {
        orders.push(reader.await.expect("reader"));
    }
    for order in &orders[1..] {
        assert_eq!(order, &orders[0], "members on every node see one order");
    }
    for index in 0..3 {
        let own: Vec<u64> = orders[0]
            .iter()
            .filter(|m| m["node"] == index)
            .map(|m| m["n"].as_u64().unwrap())
            .collect();
        assert_eq!(own, (0..PER_MEMBER as u64).collect::<Vec<_>>());
    }
    let first = nodes[0].history("?room=shared&limit=1000").await;
    let stored: Vec<Value> = first.iter().map(|m| m["message"].clone()).collect();
    assert_eq!(stored, orders[0], "history holds the delivered order");
    for node in &nodes[1..] {
        assert_eq!(
            node.history("?room=shared&limit=1000").await,
            first,
            "same history everywhere"
        );
    }
    let ids: Vec<u64> = first.iter().map(|m| m["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, (1..=total as u64).collect::<Vec<_>>());
    elsewhere.expect_silence().await;
}

#[tokio::test]
async fn redis_outage_fails_publishes_loudly_and_service_resumes_on_the_same_sockets() {
    let mut redis = RedisServer::start().await;
    let a = Server::node(&redis, &[]).await;
    let b = Server::node(&redis, &[]).await;
    let mut on_a = a.join("outage").await;
    let mut on_b = b.join("outage").await;
    on_a.send_json(json!({"message": "before"})).await;
    assert_eq!(on_b.recv().await, json!({"message": "before"}));
    assert_eq!(on_a.recv().await, json!({"message": "before"}));

    redis.stop().await;
    for node in [&a, &b] {
        eventually("/readyz turns 503", || async {
            status(node, "/readyz").await == 503
        })
        .await;
        assert_eq!(status(node, "/healthz").await, 200, "the node stays up");
        assert!(
            node.logged(&["WARN", "Redis unusable"]),
            "said so in the log"
        );
        assert!(
            !node.logged(&["caught up"]),
            "no claim to be back while Redis is down"
        );
    }
    let answer = a
        .http(
            "POST",
            "/chat/send/",
            Some(r#"{"message": "lost?", "room": "outage"}"#),
        )
        .await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert!(answer.json()["error"].as_str().unwrap().contains("Redis"));
    on_a.send_json(json!({"message": "during"})).await;
    let error = on_a.recv().await;
    assert!(
        error["error"].as_str().unwrap().contains("Redis"),
        "{error}"
    );

    redis.resume().await;
    for node in [&a, &b] {
        eventually("/readyz turns 200", || async {
            status(node, "/readyz").await == 200
        })
        .await;
        eventually("the log says Redis is usable again", || async {
            node.logged(&["Redis usable again"])
        })
        .await;
    }
    on_a.send_json(json!({"message": "after"})).await;
    assert_eq!(
        on_b.recv().await,
        json!({"message": "after"}),
        "delivery resumed"
    );
    assert_eq!(on_a.recv().await, json!({"message": "after"}));
    let stored: Vec<Value> = b
        .history("?room=outage")
        .await
        .iter()
        .map(|m| m["message"].clone())
        .collect();
    assert_eq!(
        stored,
        [json!("before"), json!("after")],
        "nothing half-stored"
    );
}

#[tokio::test]
async fn delivery_resumes_when_redis_comes_back_without_its_data() {
    let mut redis = RedisServer::start_volatile().await;
    let a = Server::node(&redis, &[]).await;
    let b = Server::node(&redis, &[]).await;
    let mut on_a = a.join("amnesia").await;
    let mut on_b = b.join("amnesia").await;
    for n in 0..5 {
        a.post_message("amnesia", json!(n)).await;
        assert_eq!(on_b.recv().await, json!({ "message": n }));
        assert_eq!(on_a.recv().await, json!({ "message": n }));
    }
    redis.stop().await;
    eventually("/readyz turns 503", || async {
        status(&b, "/readyz").await == 503
    })
    .await;
    redis.resume().await;
    for node in [&a, &b] {
        eventually("/readyz turns 200", || async {
            status(node, "/readyz").await == 200
        })
        .await;
    }
    // Ids start again from 1 in the empty Redis: they must not be taken for duplicates.
    let answer = a.post_message("amnesia", json!("after")).await;
    assert_eq!(answer["id"], 1);
    assert_eq!(on_b.recv().await, json!({"message": "after"}));
    assert_eq!(on_a.recv().await, json!({"message": "after"}));
}

#[tokio::test]
async fn the_members_of_a_killed_node_vanish_from_the_room_list() {
    let redis = RedisServer::start().await;
    let mut doomed = Server::node(&redis, &[]).await;
    let survivor = Server::node(&redis, &[]).await;
    let _doomed_members = [doomed.join("x").await, doomed.join("x").await];
    let mut kept = survivor.join("x").await;
    let _other = survivor.join("y").await;
    let rooms = |expected: Value| {
        let survivor = &survivor;
        async move {
            let listed = survivor.http("GET", "/chat/rooms/", None).await.json();
            listed["rooms"] == expected
        }
    };
    eventually("rooms summed over nodes", || {
        rooms(json!([{"room": "x", "members": 3}, {"room": "y", "members": 1}]))
    })
    .await;
    doomed.kill9().await;
    eventually("the dead node's members are gone", || {
        rooms(json!([{"room": "x", "members": 1}, {"room": "y", "members": 1}]))
    })
    .await;
    survivor.post_message("x", json!("still here")).await;
    assert_eq!(kept.recv().await, json!({"message": "still here"}));
}

#[tokio::test]
async fn a_redis_cluster_with_sharded_pub_sub_serves_rooms_on_every_master() {
    let cluster = RedisCluster::start().await;
    let urls = cluster.urls();
    let args = [
        "--redis-cluster",
        "--redis-url",
        urls.as_str(),
        "--node-ttl",
        "1500ms",
    ];
    let a = Server::start(&args).await;
    let b = Server::start(&args).await;
    // Enough rooms that their hash slots land on all three masters.
    let rooms: Vec<String> = (0..8).map(|n| format!("room{n}")).collect();
    let mut pairs = Vec::new();
    for room in &rooms {
        pairs.push((a.join(room).await, b.join(room).await));
    }
    for (room, (on_a, on_b)) in rooms.iter().zip(pairs.iter_mut()) {
        on_a.send_json(json!({"message": room})).await;
        for client in [&mut *on_a, &mut *on_b] {
            assert_eq!(client.recv().await, json!({ "message": room }));
        }
        b.post_message(room, json!("over http")).await;
        for client in [&mut *on_a, &mut *on_b] {
            assert_eq!(client.recv().await, json!({"message": "over http"}));
        }
        let history = a.history(&format!("?room={room}")).await;
        assert_eq!(history, b.history(&format!("?room={room}")).await);
        assert_eq!(history.len(), 2);
    }
    eventually("rooms listed from the cluster", || async {
        let listed = a.http("GET", "/chat/rooms/", None).await.json();
        listed["rooms"]
            .as_array()
            .is_some_and(|rooms| rooms.len() == 8 && rooms.iter().all(|room| room["members"] == 2))
    })
    .await;
}

#[tokio::test]
async fn scripts_run_by_their_sha_and_are_loaded_again_when_redis_lost_them() {
    let redis = RedisServer::start().await;
    let node = Server::node(&redis, &[]).await;
    let mut member = node.join("sha").await;
    node.post_message("sha", json!(1)).await;
    redis.cli(&["SCRIPT", "FLUSH"]).await;
    node.post_message("sha", json!(2)).await;
    assert_eq!(read_messages(&mut member, 2).await, [json!(1), json!(2)]);
    let stats = redis.cli(&["INFO", "commandstats"]).await;
    assert!(stats.contains("cmdstat_evalsha:"), "{stats}");
    assert!(
        !stats.contains("cmdstat_eval:"),
        "no script sent whole: {stats}"
    );
}

#[tokio::test]
async fn a_room_without_messages_for_its_ttl_leaves_no_keys() {
    let redis = RedisServer::start().await;
    let node = Server::node(&redis, &["--room-ttl", "1s"]).await;
    node.http(
        "POST",
        "/chat/send/",
        Some(r#"{"room": "brief", "message": 1, "nonce": "n-1"}"#),
    )
    .await;
    let keys = || async { redis.cli(&["--scan", "--pattern", "*{brief}*"]).await };
    assert!(keys().await.contains("{brief}:history"));
    eventually("the room's keys expire", || async {
        keys().await.trim().is_empty()
    })
    .await;
    let listed = node.http("GET", "/chat/rooms/", None).await.json();
    assert_eq!(listed["recent"], json!([]), "no longer offered");
}

#[tokio::test]
async fn a_node_started_while_redis_is_down_says_so_and_is_ready_once_it_is_up() {
    let mut redis = RedisServer::start().await;
    redis.stop().await;
    let node = Server::node(&redis, &[]).await;
    eventually("the log says Redis is unusable", || async {
        node.logged(&["WARN", "Redis unusable"])
    })
    .await;
    assert_eq!(status(&node, "/readyz").await, 503);
    redis.resume().await;
    eventually("/readyz turns 200", || async {
        status(&node, "/readyz").await == 200
    })
    .await;
    assert!(node.logged(&["Redis usable again"]));
}

#[tokio::test]
async fn messages_past_their_age_leave_redis_without_another_write() {
    let redis = RedisServer::start().await;
    let node = Server::node(&redis, &["--history-max-age", "1s"]).await;
    for n in 0..3 {
        node.post_message("aging", json!(n)).await;
    }
    assert_eq!(
        redis
            .cli(&["XLEN", "livechat:{aging}:history"])
            .await
            .trim(),
        "3"
    );
    eventually("the old messages are trimmed", || async {
        redis
            .cli(&["XLEN", "livechat:{aging}:history"])
            .await
            .trim()
            == "0"
    })
    .await;
    assert_eq!(
        redis.cli(&["GET", "livechat:{aging}:bytes"]).await.trim(),
        "0"
    );
    // Numbering goes on.
    let answer = node.post_message("aging", json!("new")).await;
    assert_eq!(answer["id"], 4);
}

fn signal(server: &Server, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &server.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// A node whose subscription was down while 100,000 messages went to its room catches up from
/// the stream in pages: every message once, in order, its memory bounded.
#[tokio::test]
async fn a_long_subscriber_outage_is_caught_up_in_pages() {
    const MISSED: u64 = 100_000;
    let redis = RedisServer::start().await;
    let queue = ["--outbound-queue", "200000", "--outbound-bytes", "67108864"];
    let reader_node = Server::node(&redis, &queue).await;
    let writer_node = Server::node(&redis, &["--history-max-count", "200000"]).await;
    let mut reader = reader_node.connect("/ws/chat/outage/?meta=1").await;
    let mut writer = writer_node.join("outage").await;
    writer.send_json(json!({"message": "before"})).await;
    assert_eq!(reader.recv().await["id"], 1);
    let rss_before = peak_rss_kib(reader_node.pid());

    signal(&reader_node, "-STOP");
    for n in 0..MISSED {
        writer.send_json(json!({"message": n})).await;
    }
    // The writer's own echoes: all stored.
    let mut stored = 0;
    while stored < MISSED + 1 {
        writer.recv().await;
        stored += 1;
    }
    redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]).await;
    signal(&reader_node, "-CONT");

    let mut expected = 2;
    while expected <= MISSED + 1 {
        let frame = reader.recv().await;
        assert_eq!(frame["id"], expected, "every message once, in order");
        expected += 1;
    }
    let grew_mib = (peak_rss_kib(reader_node.pid()) - rss_before) / 1024;
    eprintln!("caught up {MISSED} messages; the node's peak memory grew by {grew_mib} MiB");
    assert!(grew_mib < 256, "bounded: {grew_mib} MiB");
}

/// Redis back from an older snapshot (as after a failover to a replica that lagged): it lacks
/// messages it acknowledged, and would give their ids to new ones. The room gets a new epoch:
/// clients that follow ids are told, nobody sees old messages again, nothing new is dropped.
#[tokio::test]
async fn redis_back_without_acknowledged_messages_gives_the_room_a_new_epoch() {
    let mut redis = RedisServer::start_volatile().await;
    let a = Server::node(&redis, &[]).await;
    let b = Server::node(&redis, &[]).await;
    let epoch = a.history("?room=lag&limit=1").await;
    assert!(epoch.is_empty());
    let mut follower = a.connect("/ws/chat/lag/?meta=1&since=0").await;
    assert_eq!(follower.recv().await["event"], "caught_up");
    let mut plain = b.join("lag").await;
    for n in 1..=5 {
        a.post_message("lag", json!(n)).await;
        if n == 3 {
            redis.cli(&["SAVE"]).await; // The snapshot holds 1..3.
        }
    }
    for n in 1..=5 {
        assert_eq!(plain.recv().await, json!({ "message": n }));
        assert_eq!(follower.recv().await["id"], n);
    }
    let old_epoch = a
        .http("GET", "/chat/history/?room=lag&limit=1", None)
        .await
        .json()["epoch"]
        .clone();
    redis.stop().await;
    redis.resume().await;
    let reset = follower.recv().await;
    assert_eq!(reset["event"], "reset", "{reset}");
    assert_eq!(reset["last"], 3);
    assert_ne!(reset["epoch"], old_epoch);
    for node in [&a, &b] {
        eventually("/readyz turns 200", || async {
            status(node, "/readyz").await == 200
        })
        .await;
    }
    let answer = b.post_message("lag", json!("after")).await;
    assert_eq!(answer["id"], 4, "ids go on from what Redis has");
    assert_eq!(
        answer["epoch"], reset["epoch"],
        "every node in the new epoch"
    );
    assert_eq!(
        plain.recv().await,
        json!({"message": "after"}),
        "nothing old again"
    );
    let frame = follower.recv().await;
    assert_eq!(
        (frame["id"].clone(), frame["message"].clone()),
        (json!(4), json!("after"))
    );
    // A client resuming in the old epoch is told.
    let mut late = a
        .connect(&format!(
            "/ws/chat/lag/?meta=1&since=5&epoch={}",
            old_epoch.as_str().unwrap()
        ))
        .await;
    assert_eq!(late.recv().await["event"], "reset");
}

/// 2,000 new rooms joined at once while a room carries a steady stream: that room's members get
/// every message, in order (the new rooms are subscribed in batches, not one at a time).
#[tokio::test]
async fn a_burst_of_new_rooms_loses_nothing_elsewhere() {
    const MESSAGES: u64 = 400;
    let redis = RedisServer::start().await;
    // What is tested is that nothing is lost, not how fast 2,000 subscriptions are made: the
    // Redis timeout leaves room for a loaded machine.
    let node = &Server::node(&redis, &["--redis-timeout", "10s"]).await;
    let mut member = node.connect("/ws/chat/steady/?meta=1").await;
    let mut publisher = node.join("steady").await;
    let burst = async {
        let mut joined = Vec::new();
        for wave in 0..10 {
            let joins = (0..200).map(|n| {
                let path = format!("/ws/chat/burst{}/", wave * 200 + n);
                async move { node.connect(&path).await }
            });
            joined.extend(futures_util::future::join_all(joins).await);
        }
        joined
    };
    let steady = async {
        for n in 0..MESSAGES {
            publisher.send_json(json!({"message": n})).await;
            if n % 20 == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
    };
    let (joined, ()) = tokio::join!(burst, steady);
    assert_eq!(joined.len(), 2000);
    for n in 1..=MESSAGES {
        let frame = member.recv().await;
        assert_eq!(frame["id"], n, "every message once, in order");
    }
}
