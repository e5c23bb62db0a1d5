//! Who is here: `?presence=1` (a snapshot first, then coalesced joins and leaves per user),
//! `GET /chat/presence/`, and typing. The single-node tests run on both engines; those with
//! several nodes start their own Redis (and are skipped in the Redis pass, which would run
//! them twice).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Client, Event, RedisServer, Server, eventually};

/// The presence frames a client receives until one says the room has `members` connections,
/// counted per user name: (joins, leaves, frames read).
struct Seen {
    joined: HashMap<String, usize>,
    left: HashMap<String, usize>,
    frames: usize,
}

async fn until_members(client: &mut Client, members: u64) -> Seen {
    let mut seen = Seen {
        joined: HashMap::new(),
        left: HashMap::new(),
        frames: 0,
    };
    loop {
        let frame = client.recv().await;
        if frame["event"] != "presence" {
            continue;
        }
        seen.frames += 1;
        for (list, counts) in [("joined", &mut seen.joined), ("left", &mut seen.left)] {
            for user in frame[list].as_array().into_iter().flatten() {
                let name = user["name"].as_str().expect("a name").to_owned();
                *counts.entry(name).or_default() += 1;
            }
        }
        if frame["members"] == members {
            return seen;
        }
    }
}

async fn presence(server: &Server, room: &str) -> Value {
    let answer = server
        .http("GET", &format!("/chat/presence/?room={room}"), None)
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.json()
}

#[tokio::test]
async fn a_user_joins_with_its_first_connection_and_leaves_with_its_last() {
    let server = Server::start(&[]).await;
    let mut alice = server.connect("/ws/chat/p1/?presence=1&name=alice").await;
    assert_eq!(
        alice.recv().await,
        json!({"event": "presence", "room": "p1", "members": 1,
               "users": [{"name": "alice", "connections": 1}]})
    );
    let bob = server.connect("/ws/chat/p1/?name=bob").await;
    let bob_again = server.connect("/ws/chat/p1/?name=bob").await;
    let anonymous = server.connect("/ws/chat/p1/").await;
    let seen = until_members(&mut alice, 4).await;
    assert_eq!(seen.joined.get("bob"), Some(&1), "bob joins once");
    assert!(seen.left.is_empty());
    assert_eq!(
        presence(&server, "p1").await,
        json!({"room": "p1", "members": 4, "users": [
            {"name": "alice", "connections": 1}, {"name": "bob", "connections": 2}]})
    );
    drop(bob);
    let seen = until_members(&mut alice, 3).await;
    assert!(seen.left.is_empty(), "bob is still here");
    drop(bob_again);
    let seen = until_members(&mut alice, 2).await;
    assert_eq!(seen.left.get("bob"), Some(&1), "bob leaves once");
    drop(anonymous);
    until_members(&mut alice, 1).await;
    assert_eq!(
        presence(&server, "p1").await["users"],
        json!([{"name": "alice", "connections": 1}])
    );
}

#[tokio::test]
async fn clients_without_presence_never_get_presence_frames() {
    let server = &Server::start(&[]).await;
    let mut plain = server.connect("/ws/chat/p2/?name=carol").await;
    let mut meta = server.connect("/ws/chat/p2/?meta=1").await;
    let mut watcher = server.connect("/ws/chat/p2/?presence=1").await;
    let others: Vec<Client> = futures_util::future::join_all((0..3).map(|n| {
        let path = format!("/ws/chat/p2/?name=u{n}");
        async move { server.connect(&path).await }
    }))
    .await;
    until_members(&mut watcher, 6).await;
    drop(others);
    until_members(&mut watcher, 3).await;
    server.post_message("p2", json!("end")).await;
    assert_eq!(plain.recv().await, json!({"message": "end"}));
    assert_eq!(meta.recv().await["message"], "end");
    plain.expect_silence().await;
}

#[tokio::test]
async fn typing_reaches_the_others_throttled_and_is_never_stored() {
    let server = Server::start(&[]).await;
    let mut alice = server.connect("/ws/chat/t1/?presence=1&name=alice").await;
    let mut alice_elsewhere = server.connect("/ws/chat/t1/?presence=1&name=alice").await;
    let mut bob = server.connect("/ws/chat/t1/?presence=1&name=bob").await;
    let mut quiet = server.connect("/ws/chat/t1/?name=carol").await;
    let mut anonymous = server.connect("/ws/chat/t1/?presence=1").await;
    // A client may send one per keystroke; the room hears of it once per 2 s at most.
    for _ in 0..5 {
        alice.send_json(json!({"typing": true})).await;
    }
    alice.send_json(json!({"message": "done"})).await;
    let typing_until_done = |frames: Vec<Value>| {
        frames
            .into_iter()
            .filter(|frame| frame["event"] == "typing")
            .collect::<Vec<_>>()
    };
    let bob_saw = typing_until_done(frames_until_message(&mut bob, "done").await);
    assert_eq!(
        bob_saw,
        [json!({"event": "typing", "room": "t1", "user": {"name": "alice"}})]
    );
    // Not to the typing user, in any of its connections; not to a client without presence.
    assert!(typing_until_done(frames_until_message(&mut alice_elsewhere, "done").await).is_empty());
    assert!(typing_until_done(frames_until_message(&mut alice, "done").await).is_empty());
    let quiet_saw = frames_until_message(&mut quiet, "done").await;
    assert!(quiet_saw.is_empty(), "{quiet_saw:?}");
    // Anonymous connections cannot type.
    anonymous.send_json(json!({"typing": true})).await;
    loop {
        let frame = anonymous.recv().await;
        if let Some(error) = frame.get("error") {
            assert!(error.as_str().unwrap().contains("name"), "{frame}");
            break;
        }
    }
    let history = server.history("?room=t1").await;
    assert_eq!(history.len(), 1, "only the message: {history:?}");
}

/// Frames up to the message `text` and then until a short silence (on Redis, typing and
/// messages travel apart), but for that message.
async fn frames_until_message(client: &mut Client, text: &str) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        let frame = client.recv().await;
        if frame["message"] == text {
            break;
        }
        frames.push(frame);
    }
    while let Some(Event::Frame(frame)) = client.next_event_within(Duration::from_millis(500)).await
    {
        frames.push(frame);
    }
    frames
}

#[tokio::test]
async fn a_thousand_joins_in_a_second_cost_each_member_a_few_frames() {
    let server = &Server::start(&[]).await;
    let mut watcher = server
        .connect("/ws/chat/crowd/?presence=1&name=watcher")
        .await;
    watcher.recv().await; // The snapshot.
    let started = Instant::now();
    let mut crowd = Vec::new();
    for batch in 0..10 {
        let joins = (0..100).map(|n| {
            let path = format!("/ws/chat/crowd/?name=u{}", batch * 100 + n);
            async move { server.connect(&path).await }
        });
        crowd.extend(futures_util::future::join_all(joins).await);
    }
    let joined_in = started.elapsed();
    let seen = until_members(&mut watcher, 1001).await;
    eprintln!(
        "1,000 joins in {joined_in:?}: {} presence frames to a member",
        seen.frames
    );
    // Each once (the watcher's own join, after its snapshot, may be among them: 1,001 joins
    // in one event are cut at 1,000, with `truncated`).
    let crowd_joins: Vec<usize> = (0..1000)
        .filter_map(|n| seen.joined.get(&format!("u{n}")).copied())
        .collect();
    assert!(crowd_joins.iter().all(|joins| *joins == 1));
    assert!(crowd_joins.len() >= 999, "{} joined", crowd_joins.len());
    // One per second at most, whatever the number of joins.
    assert!(
        seen.frames as u64 <= joined_in.as_secs() + 3,
        "{} frames",
        seen.frames
    );
    let listed = presence(server, "crowd").await;
    assert_eq!(listed["members"], 1001);
    assert_eq!(listed["users"].as_array().unwrap().len(), 1000);
    assert_eq!(listed["truncated"], true, "1,001 users, 1,000 listed");
}

/// Three nodes: a user with connections on two of them joins once and leaves once; when a
/// node is killed its users leave everyone's presence within the node TTL, and presence and
/// the room list agree.
#[tokio::test]
async fn presence_spans_nodes_and_a_killed_node_leaves_no_ghosts() {
    let redis = RedisServer::start().await;
    let mut nodes = [
        Server::node(&redis, &[]).await,
        Server::node(&redis, &[]).await,
        Server::node(&redis, &[]).await,
    ];
    let mut watcher = nodes[0]
        .connect("/ws/chat/across/?presence=1&name=watcher")
        .await;
    watcher.recv().await;
    let dave_on_b = nodes[1].connect("/ws/chat/across/?name=dave").await;
    let mut dave_on_c = nodes[2]
        .connect("/ws/chat/across/?presence=1&name=dave")
        .await;
    let _erin_on_c = nodes[2].connect("/ws/chat/across/?name=erin").await;
    let seen = until_members(&mut watcher, 4).await;
    assert_eq!(seen.joined.get("dave"), Some(&1), "dave joins once");
    assert_eq!(seen.joined.get("erin"), Some(&1));
    // A node that joined late knows everyone from its first frame.
    let snapshot = loop {
        let frame = dave_on_c.recv().await;
        if frame["event"] == "presence" && frame.get("users").is_some() {
            break frame;
        }
    };
    assert!(
        snapshot["users"].as_array().unwrap().len() >= 2,
        "{snapshot}"
    );
    let everyone = json!({"room": "across", "members": 4, "users": [
        {"name": "dave", "connections": 2}, {"name": "erin", "connections": 1},
        {"name": "watcher", "connections": 1}]});
    for node in &nodes {
        let answer = presence(node, "across").await;
        assert_eq!(answer, everyone, "every node answers alike");
    }
    drop(dave_on_b);
    let seen = until_members(&mut watcher, 3).await;
    assert!(seen.left.is_empty(), "dave is still on the third node");
    let killed = Instant::now();
    nodes[2].kill9().await;
    let seen = until_members(&mut watcher, 1).await;
    let gone_after = killed.elapsed();
    eprintln!("a killed node's users left after {gone_after:?} (node TTL 1.5 s)");
    assert_eq!(seen.left.get("dave"), Some(&1));
    assert_eq!(seen.left.get("erin"), Some(&1));
    let listed = presence(&nodes[0], "across").await;
    assert_eq!(listed["members"], 1);
    eventually("the room list agrees with presence", || async {
        let rooms = nodes[0].http("GET", "/chat/rooms/", None).await.json();
        rooms["rooms"] == json!([{"room": "across", "members": 1}])
    })
    .await;
}
