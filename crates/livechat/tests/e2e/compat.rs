//! CONTRACT section 1: every client of the seed's API keeps working unchanged.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::support::{Server, handshake};

#[tokio::test]
async fn sender_and_peers_receive_the_seed_frame_with_and_without_trailing_slash() {
    let server = Server::start(&[]).await;
    let mut alice = server.connect("/ws/chat/testroom/").await;
    let mut bob = server.connect("/ws/chat/testroom").await;
    alice
        .send_json(json!({"message": "Your message here"}))
        .await;
    for client in [&mut alice, &mut bob] {
        assert_eq!(client.recv().await, json!({"message": "Your message here"}));
    }
}

#[tokio::test]
async fn any_json_value_passes_through_and_other_keys_are_ignored() {
    let server = Server::start(&[]).await;
    let mut client = server.join("values").await;
    let values = [
        json!("text"),
        json!(42),
        json!(-1.5),
        json!({"nested": {"list": [1, "two", null]}}),
        json!([1, 2, 3]),
        json!(null),
        json!(true),
    ];
    for value in &values {
        client
            .send_json(json!({"message": value, "user": "ignored", "room": "elsewhere"}))
            .await;
        assert_eq!(client.recv().await, json!({ "message": value }));
    }
}

#[tokio::test]
async fn rooms_are_isolated() {
    let server = Server::start(&[]).await;
    let mut red = server.join("red").await;
    let mut blue = server.join("blue").await;
    red.send_json(json!({"message": "for red"})).await;
    assert_eq!(red.recv().await, json!({"message": "for red"}));
    blue.expect_silence().await;
}

#[tokio::test]
async fn http_send_answers_as_the_seed_and_really_delivers() {
    let server = Server::start(&[]).await;
    let mut lobby = server.join("lobby").await;
    let mut news = server.join("news").await;

    let answer = server
        .http(
            "POST",
            "/chat/send/",
            Some(r#"{"message": "Your message here"}"#),
        )
        .await;
    assert_eq!(answer.status, 200);
    let body = answer.json();
    assert_eq!(body["message"], "Message sent!");
    assert_eq!(body["room"], "lobby", "the default room");
    assert_eq!(body["id"], 1);
    assert_eq!(lobby.recv().await, json!({"message": "Your message here"}));

    let by_body = server.post_message("news", json!({"k": 1})).await;
    assert_eq!(by_body["room"], "news");
    assert_eq!(news.recv().await, json!({"message": {"k": 1}}));
    let by_query = server
        .http("POST", "/chat/send?room=news", Some(r#"{"message": 2}"#))
        .await;
    assert_eq!(by_query.json()["room"], "news");
    assert_eq!(news.recv().await, json!({"message": 2}));
    lobby.expect_silence().await;
}

#[tokio::test]
async fn history_answers_with_the_seed_key() {
    let server = Server::start(&[]).await;
    let answer = server.http("GET", "/chat/history/", None).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["chat_history"], json!([]));
    // Beside the seed's key, the room's epoch (see resuming with `since`).
    assert!(
        answer.json()["epoch"]
            .as_str()
            .is_some_and(|epoch| !epoch.is_empty())
    );
    let answer = server.http("GET", "/chat/history", None).await;
    assert_eq!(answer.status, 200);
}

#[tokio::test]
async fn room_names_as_the_seed_and_others_refused_before_the_upgrade() {
    let server = Server::start(&[]).await;
    let longest = "r".repeat(94);
    for room in ["Room_42", "a", longest.as_str(), "team-chat"] {
        let mut client = server.join(room).await;
        client.send_json(json!({"message": room})).await;
        assert_eq!(client.recv().await, json!({ "message": room }));
    }
    let too_long = "r".repeat(95);
    for room in [
        "bad%20room",
        too_long.as_str(),
        "caf%C3%A9",
        "a.b",
        "%7Bx%7D",
        "%FF",
    ] {
        let answer = handshake(server.addr, &format!("/ws/chat/{room}/")).await;
        assert_eq!(answer.status, 400, "{room}: {answer:?}");
        let reason = answer.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(reason.contains("room"), "{room}: {reason}");
    }
}

#[tokio::test]
async fn metadata_on_request_and_the_seed_shape_for_others() {
    let server = Server::start(&[]).await;
    let mut plain = server.join("meta").await;
    let mut with_meta = server.connect("/ws/chat/meta/?meta=1").await;
    plain.send_json(json!({"message": "hello"})).await;
    assert_eq!(plain.recv().await, json!({"message": "hello"}));
    let framed = with_meta.recv().await;
    assert_eq!(framed["message"], "hello");
    assert_eq!(framed["room"], "meta");
    assert_eq!(framed["id"], 1);
    assert!(
        framed["ts"].as_u64().unwrap() > 1_600_000_000_000,
        "{framed}"
    );
}

#[tokio::test]
async fn unicode_and_a_900_kb_message_arrive_exactly() {
    let server = Server::start(&[]).await;
    let mut sender = server.join("big").await;
    let mut peer = server.join("big").await;
    let unicode = "héllo wörld — 你好 🎉 \u{0}\u{1f} \"quoted\" \\ back";
    let big: String = "0123456789abcdef".repeat(900 * 1024 / 16);
    for text in [unicode.to_owned(), big] {
        sender.send_json(json!({ "message": text })).await;
        for client in [&mut sender, &mut peer] {
            let frame = client.recv().await;
            assert_eq!(frame["message"].as_str(), Some(text.as_str()));
        }
    }
}

#[tokio::test]
async fn a_thousand_messages_from_three_senders_arrive_complete_and_in_one_order() {
    let server = Server::start(&[]).await;
    const PER_SENDER: usize = 334;
    let mut watchers = Vec::new();
    for _ in 0..2 {
        watchers.push(server.join("busy").await);
    }
    let mut senders = Vec::new();
    for _ in 0..3 {
        senders.push(server.join("busy").await);
    }
    let total = 3 * PER_SENDER;
    // The senders send at the same time; small frames fit the queues, so reading after is fine.
    let mut readers = Vec::new();
    for (index, mut client) in senders.into_iter().enumerate() {
        readers.push(tokio::spawn(async move {
            for n in 0..PER_SENDER {
                client
                    .send_json(json!({"message": {"from": index, "n": n}}))
                    .await;
            }
            read_n(&mut client, total).await
        }));
    }
    for mut client in watchers {
        readers.push(tokio::spawn(
            async move { read_n(&mut client, total).await },
        ));
    }
    let mut orders = Vec::new();
    for reader in readers {
        orders.push(reader.await.expect("reader"));
    }
    let first = &orders[0];
    assert_eq!(first.len(), total);
    assert_eq!(
        first.iter().collect::<HashSet<_>>().len(),
        total,
        "no duplicates"
    );
    for order in &orders[1..] {
        assert_eq!(order, first, "every member sees one and the same order");
    }
    for sender in 0..3 {
        let own: Vec<u64> = first
            .iter()
            .filter(|m| m["from"] == sender)
            .map(|m| m["n"].as_u64().unwrap())
            .collect();
        assert_eq!(
            own,
            (0..PER_SENDER as u64).collect::<Vec<_>>(),
            "sender order kept"
        );
    }
}

async fn read_n(client: &mut crate::support::Client, count: usize) -> Vec<Value> {
    let mut seen = Vec::with_capacity(count);
    while seen.len() < count {
        seen.push(client.recv().await["message"].clone());
    }
    seen
}
