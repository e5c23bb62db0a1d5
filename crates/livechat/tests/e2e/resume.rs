//! Resuming with `?since=` (every missed message, then live ones: no gap, no duplicate; `gap`,
//! `reset` and `caught_up` events) and publishing at most once with a nonce. These run on both
//! engines; what needs several nodes or Redis itself is at the end.

use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::support::{Client, RedisServer, Server, eventually};

/// Frames up to and including `caught_up`.
async fn until_caught_up(client: &mut Client) -> (Vec<Value>, Value) {
    let mut frames = Vec::new();
    loop {
        let frame = client.recv().await;
        if frame["event"] == "caught_up" {
            return (frames, frame);
        }
        frames.push(frame);
    }
}

fn ids(frames: &[Value]) -> Vec<u64> {
    frames
        .iter()
        .map(|frame| frame["id"].as_u64().expect("an id"))
        .collect()
}

/// A client that publishes `{"n": k}` to `room`, k = 0, 1, ..., in bursts of 4 a millisecond
/// until told to stop; then how many it sent. Steady rather than as fast as it can: on a loaded
/// machine a flood outruns a debug build and the test measures the backlog instead of the race.
async fn publish_continuously(
    server: &Server,
    room: &str,
    stop: CancellationToken,
) -> JoinHandle<u64> {
    let mut publisher = server.join(room).await;
    tokio::spawn(async move {
        let mut sent = 0;
        while !stop.is_cancelled() {
            publisher.send_json(json!({"message": {"n": sent}})).await;
            sent += 1;
            if sent % 4 == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        }
        sent
    })
}

async fn epoch_of(server: &Server, room: &str) -> String {
    let answer = server
        .http("GET", &format!("/chat/history/?room={room}&limit=1"), None)
        .await;
    answer.json()["epoch"]
        .as_str()
        .expect("an epoch")
        .to_owned()
}

#[tokio::test]
async fn a_reconnecting_client_gets_exactly_what_it_missed_then_live_messages() {
    // Large queues: the publisher and `other` never read, and on a slow machine the replay can
    // take long enough for more than the default 1,024 live frames to be held meanwhile.
    let server = Server::start(&[
        "--replay-max",
        "100000",
        "--history-max-count",
        "1000000",
        "--outbound-queue",
        "1000000",
        "--outbound-bytes",
        "1073741824",
    ])
    .await;
    let stop = CancellationToken::new();
    let publisher = publish_continuously(&server, "race", stop.clone()).await;
    let mut other = server.join("race").await;
    let mut last = 0;
    // The race between the replay and live messages is the point: reconnect many times.
    for round in 0..12 {
        let path = match round {
            0 => "/ws/chat/race/?meta=1".to_owned(),
            _ => format!("/ws/chat/race/?meta=1&since={last}"),
        };
        let mut client = server.connect(&path).await;
        let mut seen = Vec::new();
        if round > 0 {
            let (replayed, caught_up) = until_caught_up(&mut client).await;
            assert!(
                replayed.iter().all(|frame| frame.get("event").is_none()),
                "{replayed:?}"
            );
            let replayed = ids(&replayed);
            assert_eq!(caught_up["id"], replayed.last().copied().unwrap_or(last));
            assert_eq!(caught_up["room"], "race");
            seen.extend(replayed);
        }
        // Live messages for a while, then away: 200 more are published meanwhile.
        while seen.len() < 300 {
            seen.push(client.recv().await["id"].as_u64().expect("an id"));
        }
        if round == 0 {
            last = seen[0] - 1; // It joined while the publisher was already going.
        }
        let expected: Vec<u64> = (last + 1..=last + seen.len() as u64).collect();
        let wrong = seen
            .iter()
            .zip(&expected)
            .position(|(seen, expected)| seen != expected);
        assert!(
            wrong.is_none(),
            "round {round}: every id once, in order; wrong at {wrong:?}"
        );
        last = *seen.last().expect("ids");
        drop(client);
        for n in 0..100 {
            other.send_json(json!({"message": {"missed": n}})).await;
            server.post_message("race", json!({"missed_http": n})).await;
        }
    }
    stop.cancel();
    assert!(publisher.await.expect("publisher") > 0);
    // The client without `since` never saw an event.
    other.send_json(json!({"message": "end"})).await;
    loop {
        let frame = other.recv().await;
        assert!(frame.get("event").is_none(), "{frame}");
        if frame["message"] == "end" {
            break;
        }
    }
}

#[tokio::test]
async fn plain_frames_resume_too() {
    let server = Server::start(&[]).await;
    for n in 1..=5 {
        server.post_message("plain", json!(n)).await;
    }
    let mut client = server.connect("/ws/chat/plain/?since=2").await;
    let (replayed, caught_up) = until_caught_up(&mut client).await;
    assert_eq!(
        replayed,
        [
            json!({"message": 3}),
            json!({"message": 4}),
            json!({"message": 5})
        ]
    );
    assert_eq!(caught_up["id"], 5);
    assert_eq!(caught_up["epoch"], epoch_of(&server, "plain").await);
    server.post_message("plain", json!(6)).await;
    assert_eq!(client.recv().await, json!({"message": 6}));
}

#[tokio::test]
async fn a_gap_is_announced_when_history_no_longer_holds_the_range() {
    let server = Server::start(&["--history-max-count", "10"]).await;
    for n in 1..=30 {
        server.post_message("short", json!(n)).await;
    }
    let mut client = server.connect("/ws/chat/short/?meta=1&since=5").await;
    let (frames, caught_up) = until_caught_up(&mut client).await;
    assert_eq!(
        frames[0],
        json!({"event": "gap", "room": "short", "from": 6, "to": 20})
    );
    assert_eq!(ids(&frames[1..]), (21..=30).collect::<Vec<u64>>());
    assert_eq!(caught_up["id"], 30);
}

#[tokio::test]
async fn the_replay_is_bounded_and_says_what_it_left_out() {
    let server = Server::start(&["--replay-max", "5"]).await;
    for n in 1..=20 {
        server.post_message("long", json!(n)).await;
    }
    let mut client = server.connect("/ws/chat/long/?meta=1&since=0").await;
    let (frames, caught_up) = until_caught_up(&mut client).await;
    assert_eq!(
        frames[0],
        json!({"event": "gap", "room": "long", "from": 1, "to": 15})
    );
    assert_eq!(ids(&frames[1..]), [16, 17, 18, 19, 20]);
    assert_eq!(caught_up["id"], 20);
}

#[tokio::test]
async fn a_client_ahead_of_the_room_or_in_another_epoch_is_reset() {
    let server = Server::start(&[]).await;
    for n in 1..=3 {
        server.post_message("ahead", json!(n)).await;
    }
    let epoch = epoch_of(&server, "ahead").await;
    for path in [
        "/ws/chat/ahead/?meta=1&since=1000".to_owned(),
        "/ws/chat/ahead/?meta=1&since=2&epoch=not-this-one".to_owned(),
    ] {
        let mut client = server.connect(&path).await;
        let (frames, caught_up) = until_caught_up(&mut client).await;
        let reset = json!({"event": "reset", "room": "ahead", "last": 3, "epoch": epoch});
        assert_eq!(frames, [reset], "{path}");
        assert_eq!(caught_up["id"], 3);
    }
    // The right epoch resumes as usual.
    let mut client = server
        .connect(&format!("/ws/chat/ahead/?meta=1&since=2&epoch={epoch}"))
        .await;
    let (frames, _) = until_caught_up(&mut client).await;
    assert_eq!(ids(&frames), [3]);
}

#[tokio::test]
async fn a_bad_since_or_epoch_is_refused_before_the_upgrade() {
    let server = Server::start(&[]).await;
    for query in [
        "since=-1",
        "since=x",
        "epoch=e",
        &format!("since=1&epoch={}", "e".repeat(65)),
    ] {
        let answer = crate::support::handshake(server.addr, &format!("/ws/chat/r/?{query}")).await;
        assert_eq!(answer.status, 400, "{query}");
    }
}

/// Publishes over HTTP with a nonce; the answer.
async fn post_once(server: &Server, room: &str, message: Value, nonce: &str) -> Value {
    let body = json!({"message": message, "room": room, "nonce": nonce}).to_string();
    let answer = server.http("POST", "/chat/send/", Some(&body)).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.json()
}

#[tokio::test]
async fn a_nonce_is_stored_and_delivered_once() {
    let server = Server::start(&[]).await;
    let mut sender = server.connect("/ws/chat/once/?meta=1").await;
    let mut member = server.connect("/ws/chat/once/?meta=1").await;
    sender
        .send_json(json!({"message": "hello", "nonce": "n-1"}))
        .await;
    let first = sender.recv().await;
    assert_eq!(
        (first["id"].as_u64(), &first["nonce"]),
        (Some(1), &json!("n-1"))
    );
    assert_eq!(member.recv().await, first);
    // Sent again (the client did not see its echo): only the sender hears of it, with the same id.
    sender
        .send_json(json!({"message": "hello", "nonce": "n-1"}))
        .await;
    assert_eq!(sender.recv().await, first);
    // Over HTTP too: the first answer, marked as a duplicate.
    let http_first = post_once(&server, "once", json!("by http"), "n-2").await;
    assert_eq!(http_first.get("duplicate"), None);
    let again = post_once(&server, "once", json!("by http"), "n-2").await;
    assert_eq!(again["id"], http_first["id"]);
    assert_eq!(again["ts"], http_first["ts"]);
    assert_eq!(again["epoch"], http_first["epoch"]);
    assert_eq!(again["duplicate"], true);
    // Another room has nonces of its own.
    let elsewhere = post_once(&server, "elsewhere", json!(1), "n-2").await;
    assert_eq!(
        (elsewhere["id"].as_u64(), elsewhere.get("duplicate")),
        (Some(1), None)
    );
    let history = server.history("?room=once").await;
    assert_eq!(history.len(), 2, "{history:?}");
    assert_eq!(history[0]["nonce"], "n-1");
    assert_eq!(member.recv().await["id"], 2);
    assert_eq!(sender.recv().await["id"], 2);
    member.expect_silence().await;
    // A nonce that is not 1-64 characters is refused, not ignored.
    sender.send_json(json!({"message": 1, "nonce": ""})).await;
    assert!(
        sender.recv().await["error"]
            .as_str()
            .unwrap()
            .contains("nonce")
    );
}

#[tokio::test]
async fn resuming_and_nonces_hold_across_restarts() {
    // On Redis the history lives in Redis: a restart of the node keeps it the same way.
    let mut server = Server::start(&[]).await;
    let mut client = server.connect("/ws/chat/kept/?meta=1").await;
    let first = post_once(&server, "kept", json!("before"), "k-1").await;
    let epoch = first["epoch"].as_str().unwrap().to_owned();
    assert_eq!(client.recv().await["id"], 1);
    drop(client);
    for (round, signal) in ["TERM", "KILL"].into_iter().enumerate() {
        for n in 0..10 {
            server
                .post_message("kept", json!({"round": round, "n": n}))
                .await;
        }
        match signal {
            "TERM" => assert!(server.stop().await.success()),
            _ => server.kill9().await,
        }
        server.restart().await;
        for n in 10..20 {
            server
                .post_message("kept", json!({"round": round, "n": n}))
                .await;
        }
    }
    let mut client = server
        .connect(&format!("/ws/chat/kept/?meta=1&since=1&epoch={epoch}"))
        .await;
    let (frames, caught_up) = until_caught_up(&mut client).await;
    assert_eq!(ids(&frames), (2..=41).collect::<Vec<u64>>());
    assert_eq!(
        (caught_up["id"].as_u64(), caught_up["epoch"].as_str()),
        (Some(41), Some(&*epoch))
    );
    let again = post_once(&server, "kept", json!("before"), "k-1").await;
    assert_eq!(
        (again["id"].as_u64(), &again["duplicate"]),
        (Some(1), &json!(true))
    );
}

#[tokio::test]
async fn a_new_history_file_is_a_new_epoch() {
    let mut server = Server::start(&[]).await;
    for n in 1..=5 {
        server.post_message("fresh", json!(n)).await;
    }
    let epoch = epoch_of(&server, "fresh").await;
    assert!(server.stop().await.success());
    for entry in std::fs::read_dir(&server.data_dir).expect("data dir") {
        std::fs::remove_file(entry.expect("entry").path()).expect("remove");
    }
    server.restart().await;
    server.post_message("fresh", json!("new")).await;
    let mut client = server
        .connect(&format!("/ws/chat/fresh/?meta=1&since=5&epoch={epoch}"))
        .await;
    let (frames, _) = until_caught_up(&mut client).await;
    assert_eq!(frames[0]["event"], "reset");
    assert_eq!(frames[0]["last"], 1);
    assert_ne!(frames[0]["epoch"], json!(epoch));
}

// ---- several nodes, one Redis -------------------------------------------------------------

#[tokio::test]
async fn resume_on_another_node_after_the_first_died() {
    let redis = RedisServer::start().await;
    let mut first = Server::node(&redis, &[]).await;
    let second = Server::node(&redis, &[]).await;
    let mut client = first.connect("/ws/chat/moving/?meta=1").await;
    let nonce_answer = post_once(&second, "moving", json!("once"), "m-1").await;
    assert_eq!(client.recv().await["id"], 1);
    first.kill9().await;
    assert!(matches!(
        client.next_event().await,
        crate::support::Event::Closed(..)
    ));
    let mut publisher = second.join("moving").await;
    for n in 0..100 {
        publisher.send_json(json!({"message": n})).await;
        second.post_message("moving", json!({"http": n})).await;
    }
    let mut client = second.connect("/ws/chat/moving/?meta=1&since=1").await;
    let (frames, caught_up) = until_caught_up(&mut client).await;
    assert_eq!(ids(&frames), (2..=201).collect::<Vec<u64>>());
    assert_eq!(caught_up["id"], 201);
    // The nonce holds on the other node too.
    let again = post_once(&second, "moving", json!("once"), "m-1").await;
    assert_eq!(
        (again["id"].as_u64(), &again["duplicate"]),
        (Some(1), &json!(true))
    );
    assert_eq!(again["epoch"], nonce_answer["epoch"]);
}

#[tokio::test]
async fn redis_losing_its_data_resets_resuming_clients() {
    let redis = RedisServer::start().await;
    let server = Server::node(&redis, &[]).await;
    let mut resuming = server.connect("/ws/chat/lost/?meta=1&since=0").await;
    let (_, caught_up) = until_caught_up(&mut resuming).await;
    let old_epoch = caught_up["epoch"].clone();
    let mut plain = server.connect("/ws/chat/lost/?meta=1").await;
    for n in 1..=5 {
        server.post_message("lost", json!(n)).await;
    }
    for _ in 1..=5 {
        resuming.recv().await;
        plain.recv().await;
    }
    redis.cli(&["FLUSHALL"]).await;
    // More messages than before: the new ids pass the old ones.
    for n in 1..=8 {
        server.post_message("lost", json!({"new": n})).await;
    }
    let reset = resuming.recv().await;
    assert_eq!(reset["event"], "reset");
    assert_eq!(reset["last"], 0);
    assert_ne!(reset["epoch"], old_epoch);
    let mut renumbered = Vec::new();
    for _ in 0..8 {
        renumbered.push(resuming.recv().await);
    }
    assert_eq!(ids(&renumbered), (1..=8).collect::<Vec<u64>>());
    // A client without `since` gets no event, but does get the new messages.
    for n in 1..=8 {
        let frame = plain.recv().await;
        assert_eq!(frame["message"], json!({"new": n}));
    }
    // Resuming with the old epoch now is a reset too.
    let mut late = server
        .connect(&format!(
            "/ws/chat/lost/?meta=1&since=5&epoch={}",
            old_epoch.as_str().unwrap()
        ))
        .await;
    let (frames, _) = until_caught_up(&mut late).await;
    assert_eq!(frames[0]["event"], "reset");
    assert_eq!(frames[0]["last"], 8);
    eventually("the node is ready again", || async {
        server.http("GET", "/readyz", None).await.status == 200
    })
    .await;
}
