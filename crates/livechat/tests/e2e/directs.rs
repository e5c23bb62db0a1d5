//! Direct messages: rooms between two signed-in users that only they (and the server key) can
//! join, read or post in, opened with `POST /chat/dm/` and listed by `GET /chat/dm/`.

use serde_json::{Value, json};

use crate::support::{Server, handshake};

const SECRET: &str = "directs-e2e-secret-of-a-decent-length";
const KEY: &str = "directs-e2e-server-key";

fn token(sub: &str, extra: Value) -> String {
    crate::support::signed_token(SECRET, sub, extra)
}

async fn secured() -> Server {
    Server::start(&[
        "--auth",
        "required",
        "--jwt-secret",
        SECRET,
        "--api-key",
        KEY,
    ])
    .await
}

#[tokio::test]
async fn a_direct_message_room_is_for_its_two_users_only() {
    let server = secured().await;
    // Tokens limited to the lobby: one's own direct messages need no claim.
    let only_lobby = json!({"rooms": ["lobby"]});
    let (alice, bob, carol) = (
        token("alice", only_lobby.clone()),
        token("bob", only_lobby.clone()),
        token("carol", json!({})),
    );
    let opened = server
        .call(&bob, "POST", "/chat/dm/", Some(json!({"with": "alice"})))
        .await;
    assert_eq!(opened.status, 200, "{opened:?}");
    assert_eq!(
        opened.json(),
        json!({"room": "dm:alice:bob", "with": "alice"})
    );

    let mut on_alice = server
        .connect(&format!("/ws/chat/dm:alice:bob/?meta=1&token={alice}"))
        .await;
    let mut on_bob = server
        .connect(&format!("/ws/chat/dm:alice:bob/?token={bob}"))
        .await;
    on_bob.send_json(json!({"message": "psst"})).await;
    assert_eq!(on_alice.recv().await["message"], "psst");
    assert_eq!(on_bob.recv().await, json!({"message": "psst"}));

    // Carol, whose token allows every room, is still not one of the two.
    let refused = handshake(
        server.addr,
        &format!("/ws/chat/dm:alice:bob/?token={carol}"),
    )
    .await;
    assert_eq!(refused.status, 403, "{refused:?}");
    assert_eq!(
        refused.json()["error"],
        "room dm:alice:bob is a direct-message room of two other users"
    );
    for (method, path, body) in [
        ("GET", "/chat/history/?room=dm:alice:bob", None),
        ("GET", "/chat/presence/?room=dm:alice:bob", None),
        (
            "POST",
            "/chat/send/",
            Some(json!({"room": "dm:alice:bob", "message": "hi"})),
        ),
        (
            "POST",
            "/chat/read/",
            Some(json!({"room": "dm:alice:bob", "id": 1})),
        ),
    ] {
        let answer = server.call(&carol, method, path, body).await;
        assert_eq!(answer.status, 403, "{method} {path}: {answer:?}");
    }
    // The room list names it to its two users only (it says who talks to whom).
    let listed = |answer: &crate::support::HttpAnswer| {
        let json = answer.json();
        ["rooms", "recent"].iter().any(|list| {
            json[*list]
                .as_array()
                .is_some_and(|rooms| rooms.iter().any(|room| room["room"] == "dm:alice:bob"))
        })
    };
    let for_carol = server.call(&carol, "GET", "/chat/rooms/", None).await;
    assert_eq!(for_carol.status, 200, "{for_carol:?}");
    assert!(!listed(&for_carol), "{for_carol:?}");
    assert!(listed(
        &server.call(&alice, "GET", "/chat/rooms/", None).await
    ));
    // The server key reads it (the app's backend).
    let history = server
        .call(KEY, "GET", "/chat/history/?room=dm:alice:bob", None)
        .await;
    assert_eq!(history.json()["chat_history"][0]["message"], "psst");

    for (body, why) in [
        (json!({"with": "bob"}), "oneself"),
        (json!({"with": "not an id!"}), "an id a room cannot name"),
        (json!({"with": "x".repeat(41)}), "too long an id"),
        (json!({}), "no one"),
        (json!({"with": 7}), "not a string"),
    ] {
        let refused = server.call(&bob, "POST", "/chat/dm/", Some(body)).await;
        assert_eq!(refused.status, 400, "{why}: {refused:?}");
    }
    // A room name the server would not make: the pair out of order.
    let refused = handshake(server.addr, &format!("/ws/chat/dm:bob:alice/?token={bob}")).await;
    assert_eq!(refused.status, 400, "{refused:?}");
}

#[tokio::test]
async fn the_list_shows_each_room_with_the_other_user_its_last_message_and_what_is_unread() {
    let server = secured().await;
    let (alice, bob) = (token("alice", json!({})), token("bob", json!({})));
    for with in ["bob", "carol"] {
        let opened = server
            .call(&alice, "POST", "/chat/dm/", Some(json!({"with": with})))
            .await;
        assert_eq!(opened.status, 200, "{opened:?}");
    }
    for n in 1..=3 {
        let sent = server
            .call(
                &bob,
                "POST",
                "/chat/send/",
                Some(json!({"room": "dm:alice:bob", "message": format!("note {n}")})),
            )
            .await;
        assert_eq!(sent.status, 200, "{sent:?}");
    }
    let list = server.call(&alice, "GET", "/chat/dm/", None).await.json();
    let directs = list["directs"].as_array().unwrap();
    assert_eq!(directs.len(), 2, "{list}");
    let with_bob = &directs[0];
    assert_eq!(
        (
            &with_bob["room"],
            &with_bob["with"],
            &with_bob["unread"],
            &with_bob["last_id"]
        ),
        (&json!("dm:alice:bob"), &json!("bob"), &json!(3), &json!(3))
    );
    assert_eq!(with_bob["last"]["message"], "note 3");
    assert_eq!(with_bob["last"]["user"]["id"], "bob");
    let with_carol = &directs[1];
    assert_eq!(
        (
            &with_carol["room"],
            &with_carol["with"],
            &with_carol["last"],
            &with_carol["unread"]
        ),
        (
            &json!("dm:alice:carol"),
            &json!("carol"),
            &Value::Null,
            &json!(0)
        )
    );

    let read = server
        .call(
            &alice,
            "POST",
            "/chat/read/",
            Some(json!({"room": "dm:alice:bob", "id": 2})),
        )
        .await;
    assert_eq!(read.status, 200, "{read:?}");
    let list = server.call(&alice, "GET", "/chat/dm/", None).await.json();
    assert_eq!(list["directs"][0]["unread"], 1);
    // Bob was listed too when Alice opened it.
    let list = server.call(&bob, "GET", "/chat/dm/", None).await.json();
    assert_eq!(list["directs"][0]["with"], "alice");
    assert_eq!(list["directs"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn with_auth_off_there_are_no_direct_messages() {
    let server = Server::start(&[]).await;
    let answer = server
        .http("POST", "/chat/dm/?name=ann", Some(r#"{"with": "bo"}"#))
        .await;
    assert_eq!(answer.status, 403, "{answer:?}");
    assert!(
        answer.json()["error"]
            .as_str()
            .unwrap()
            .contains("signed-in user")
    );
    let refused = handshake(server.addr, "/ws/chat/dm:ann:bo/?name=ann").await;
    assert_eq!(refused.status, 403, "{refused:?}");
    let list = server.http("GET", "/chat/dm/", None).await;
    assert_eq!(list.status, 403, "{list:?}");
}
