//! A message's whole life: replies, edits, deletions and reactions, consistent live, in history
//! and on resume; read positions and unread counts.

use serde_json::{Value, json};

use crate::support::{Server, http};

const SECRET: &str = "changes-e2e-secret-of-a-decent-length";

fn token(sub: &str, extra: Value) -> String {
    crate::support::signed_token(SECRET, sub, extra)
}

async fn secured() -> Server {
    Server::start(&[
        "--auth",
        "required",
        "--jwt-secret",
        SECRET,
        "--edit-window",
        "1h",
    ])
    .await
}

/// Reads frames until one that is not a message echo of someone else's (an event or error).
async fn next_event(client: &mut crate::support::Client) -> Value {
    loop {
        let frame = client.recv().await;
        if frame.get("event").is_some() || frame.get("error").is_some() {
            return frame;
        }
    }
}

#[tokio::test]
async fn authors_edit_and_delete_their_own_messages_and_everyone_with_metadata_is_told() {
    let server = secured().await;
    let (alice, bob) = (token("alice", json!({})), token("bob", json!({})));
    let mut ann = server
        .connect(&format!("/ws/chat/life/?meta=1&token={alice}"))
        .await;
    let mut ben = server
        .connect(&format!("/ws/chat/life/?meta=1&token={bob}"))
        .await;
    let mut plain = server.connect(&format!("/ws/chat/life/?token={bob}")).await;
    ann.send_json(json!({"message": "first draft"})).await;
    let id = ann.recv().await["id"].as_u64().unwrap();
    ben.recv().await;
    assert_eq!(plain.recv().await, json!({"message": "first draft"}));

    // Someone else's message: not allowed, nothing changed.
    ben.send_json(json!({"edit": id, "message": "hijacked"}))
        .await;
    assert_eq!(
        ben.recv().await,
        json!({"error": format!("not allowed: only its author or a moderator may change message {id}"), "for": "edit", "id": id})
    );
    // Its author edits it: every member with metadata is told; the original's clients see nothing.
    ann.send_json(json!({"edit": id, "message": "final text"}))
        .await;
    for client in [&mut ann, &mut ben] {
        let edited = next_event(client).await;
        assert_eq!(
            (&edited["event"], &edited["id"], &edited["message"]),
            (&json!("edited"), &json!(id), &json!("final text"))
        );
        assert_eq!(edited["by"]["id"], "alice");
        assert!(edited["edited_ts"].as_u64().is_some());
    }
    let history = server
        .get_as(&alice, "/chat/history/?room=life")
        .await
        .json();
    let item = &history["chat_history"][0];
    assert_eq!(
        (&item["message"], &item["user"]["id"]),
        (&json!("final text"), &json!("alice"))
    );
    assert!(item["edited_ts"].as_u64().is_some());

    // Deleted: a tombstone, its text and author gone; a second delete and an edit are refused.
    ann.send_json(json!({"delete": id})).await;
    for client in [&mut ann, &mut ben] {
        let deleted = next_event(client).await;
        assert_eq!(
            (&deleted["event"], &deleted["id"], &deleted["by"]["id"]),
            (&json!("deleted"), &json!(id), &json!("alice"))
        );
    }
    let history = server
        .get_as(&alice, "/chat/history/?room=life")
        .await
        .json();
    let tombstone = &history["chat_history"][0];
    assert_eq!(tombstone.as_object().unwrap().len(), 4, "{tombstone}");
    assert_eq!(
        (&tombstone["id"], &tombstone["deleted"]),
        (&json!(id), &json!(true))
    );
    for again in [
        json!({"delete": id}),
        json!({"edit": id, "message": "back"}),
    ] {
        ann.send_json(again).await;
        let refused = ann.recv().await;
        assert_eq!(
            refused["error"],
            format!("message {id} is deleted"),
            "{refused}"
        );
    }
    ann.send_json(json!({"edit": 999, "message": "x"})).await;
    assert_eq!(ann.recv().await["error"], "no message 999 in this room");
    plain.expect_silence().await;
}

#[tokio::test]
async fn moderators_change_any_message_and_http_does_the_same() {
    let server = secured().await;
    let (alice, moderator) = (
        token("alice", json!({})),
        token("mod", json!({"moderate": true})),
    );
    let mut ann = server
        .connect(&format!("/ws/chat/modded/?meta=1&token={alice}"))
        .await;
    for text in ["one", "two", "three"] {
        ann.send_json(json!({"message": text})).await;
        ann.recv().await;
    }
    let patch = |path: &str, token: &str, body: Option<&str>, method: &'static str| {
        let (path, bearer, body) = (
            path.to_owned(),
            format!("Bearer {token}"),
            body.map(str::to_owned),
        );
        let addr = server.addr;
        async move {
            http(
                addr,
                method,
                &path,
                body.as_deref().map(str::as_bytes),
                &[("Authorization", &bearer)],
            )
            .await
        }
    };
    let edited = patch(
        "/chat/history/modded/1",
        &moderator,
        Some(r#"{"message": "moderated"}"#),
        "PATCH",
    )
    .await;
    assert_eq!(edited.status, 200, "{edited:?}");
    assert_eq!(edited.json()["event"], "edited");
    assert_eq!(next_event(&mut ann).await["message"], "moderated");
    let deleted = patch("/chat/history/modded/2", &moderator, None, "DELETE").await;
    assert_eq!(
        (deleted.status, &deleted.json()["event"]),
        (200, &json!("deleted"))
    );
    // The author over HTTP; someone else refused; unknown ids are 404.
    let own = patch("/chat/history/modded/3", &alice, None, "DELETE").await;
    assert_eq!(own.status, 200);
    let other = patch(
        "/chat/history/modded/1",
        &token("bob", json!({})),
        None,
        "DELETE",
    )
    .await;
    assert_eq!(other.status, 403, "{other:?}");
    let missing = patch("/chat/history/modded/77", &alice, None, "DELETE").await;
    assert_eq!(missing.status, 404);
    let bad = patch("/chat/history/modded/abc", &alice, None, "DELETE").await;
    assert_eq!(bad.status, 400);
    let oversize = format!(r#"{{"message": "{}"}}"#, "x".repeat(2 << 20));
    let too_big = patch(
        "/chat/history/modded/1",
        &moderator,
        Some(&oversize),
        "PATCH",
    )
    .await;
    assert_eq!(too_big.status, 413);
}

#[tokio::test]
async fn with_auth_off_http_changes_are_made_under_the_chosen_name() {
    let server = Server::start(&[]).await;
    let mut ann = server.connect("/ws/chat/named/?name=ann").await;
    ann.send_json(json!({"message": "hello"})).await;
    ann.recv().await;
    let edit = |who: &'static str| {
        let path = format!("/chat/history/named/1{who}");
        let server = &server;
        async move {
            server
                .http("PATCH", &path, Some(r#"{"message": "hello again"}"#))
                .await
        }
    };
    let nameless = edit("").await;
    assert_eq!(nameless.status, 400, "{nameless:?}");
    assert!(nameless.body.contains("?name="), "{nameless:?}");
    assert_eq!(edit("?name=bob").await.status, 403, "not bob's message");
    let own = edit("?name=ann").await;
    assert_eq!(own.status, 200, "{own:?}");
    let reacted = server
        .http(
            "POST",
            "/chat/history/named/1/reactions?name=bob",
            Some(r#"{"emoji": "👍"}"#),
        )
        .await;
    assert_eq!(reacted.status, 200, "{reacted:?}");
}

#[tokio::test]
async fn a_client_away_gets_the_edits_and_deletions_made_meanwhile_on_resume() {
    let server = Server::start(&[]).await;
    let mut ann = server.connect("/ws/chat/away/?meta=1&name=Ann").await;
    for n in 1..=4 {
        ann.send_json(json!({"message": format!("m{n}")})).await;
        ann.recv().await;
    }
    // Bo saw everything through 4, then left.
    ann.send_json(json!({"edit": 2, "message": "m2, edited"}))
        .await;
    next_event(&mut ann).await;
    ann.send_json(json!({"message": "m5"})).await;
    ann.recv().await;
    ann.send_json(json!({"delete": 3})).await;
    next_event(&mut ann).await;
    ann.send_json(json!({"react": 1, "emoji": "👍"})).await;
    next_event(&mut ann).await;
    let mut bo = server
        .connect("/ws/chat/away/?meta=1&name=Bo&since=4")
        .await;
    let mut frames = Vec::new();
    loop {
        let frame = bo.recv().await;
        let done = frame["event"] == "caught_up";
        frames.push(frame);
        if done {
            break;
        }
    }
    let edited = frames.iter().find(|f| f["event"] == "edited").unwrap();
    assert_eq!(
        (&edited["id"], &edited["message"]),
        (&json!(2), &json!("m2, edited"))
    );
    assert!(
        frames
            .iter()
            .any(|f| f["event"] == "deleted" && f["id"] == 3)
    );
    let reactions = frames.iter().find(|f| f["event"] == "reactions").unwrap();
    assert_eq!(
        reactions["reactions"],
        json!({"👍": {"count": 1, "me": false}})
    );
    assert!(frames.iter().any(|f| f["id"] == 5 && f["message"] == "m5"));
    // The deleted message's old text is sent nowhere.
    assert!(
        !frames.iter().any(|f| f.to_string().contains("m3")),
        "{frames:?}"
    );
    // The original service's clients resuming see no events, and no deleted message.
    let mut plain = server.connect("/ws/chat/away/?since=2").await;
    let first = plain.recv().await;
    assert_eq!(first, json!({"message": "m4"}));
}

#[tokio::test]
async fn reactions_count_once_per_user_and_emoji_are_bounded_and_show_in_history() {
    let server = Server::start(&[]).await;
    let mut ann = server.connect("/ws/chat/likes/?meta=1&name=Ann").await;
    let mut bo = server.connect("/ws/chat/likes/?meta=1&name=Bo").await;
    ann.send_json(json!({"message": "react to me"})).await;
    ann.recv().await;
    bo.recv().await;
    let react = json!({"react": 1, "emoji": "🎉"});
    // Each reaction is seen before the next is sent: sent on two connections, they would
    // otherwise race each other to the server.
    let mut counts = Vec::new();
    for by_ann in [true, false, true] {
        let reacting = if by_ann { &mut ann } else { &mut bo };
        reacting.send_json(react.clone()).await;
        let event = next_event(&mut bo).await;
        assert_eq!(
            (&event["event"], &event["emoji"]),
            (&json!("reaction"), &json!("🎉"))
        );
        counts.push(event["count"].clone());
    }
    assert_eq!(counts, [json!(1), json!(2), json!(2)], "one per user");
    for _ in 0..3 {
        next_event(&mut ann).await;
    }
    let as_ann = server.history("?room=likes").await;
    assert_eq!(
        as_ann[0]["reactions"],
        json!({"🎉": {"count": 2, "me": false}})
    );
    let mine = http(server.addr, "GET", "/chat/history/?room=likes", None, &[])
        .await
        .json();
    assert_eq!(mine["chat_history"][0]["reactions"]["🎉"]["count"], 2);
    // With auth off, a reader named by ?name= (as the page reads history) is told its own.
    let named = |name: &'static str| {
        let path = format!("/chat/history/?room=likes&name={name}");
        async move { http(server.addr, "GET", &path, None, &[]).await.json() }
    };
    assert_eq!(
        named("Ann").await["chat_history"][0]["reactions"],
        json!({"🎉": {"count": 2, "me": true}})
    );
    assert_eq!(
        named("Cy").await["chat_history"][0]["reactions"]["🎉"]["me"],
        false
    );
    bo.send_json(json!({"unreact": 1, "emoji": "🎉"})).await;
    assert_eq!(next_event(&mut ann).await["count"], 1);
    // Bounds: a long emoji, 20 kinds at most, anonymous connections.
    ann.send_json(json!({"react": 1, "emoji": "x".repeat(17)}))
        .await;
    assert_eq!(ann.recv().await["for"], "react");
    for n in 0..19 {
        ann.send_json(json!({"react": 1, "emoji": format!("e{n}")}))
            .await;
        next_event(&mut ann).await;
    }
    ann.send_json(json!({"react": 1, "emoji": "one too many"}))
        .await;
    let refused = next_event(&mut ann).await;
    assert_eq!(
        refused["error"], "message 1 has 20 kinds of reaction already",
        "{refused}"
    );
    let mut nobody = server.connect("/ws/chat/likes/").await;
    nobody.send_json(json!({"react": 1, "emoji": "👍"})).await;
    assert!(
        nobody.recv().await["error"]
            .as_str()
            .unwrap()
            .contains("needs a name")
    );
}

#[tokio::test]
async fn replies_name_a_message_of_the_room_and_stay_when_it_is_deleted() {
    let server = Server::start(&[]).await;
    let mut ann = server.connect("/ws/chat/thread/?meta=1&name=Ann").await;
    ann.send_json(json!({"message": "question"})).await;
    ann.recv().await;
    ann.send_json(json!({"message": "answer", "reply_to": 1}))
        .await;
    let reply = ann.recv().await;
    assert_eq!((&reply["id"], &reply["reply_to"]), (&json!(2), &json!(1)));
    ann.send_json(json!({"message": "to nothing", "reply_to": 9, "nonce": "r-9"}))
        .await;
    let refused = ann.recv().await;
    assert_eq!(
        refused,
        json!({"error": "cannot reply to message 9: there is no such message in this room", "for": "message", "nonce": "r-9"})
    );
    ann.send_json(json!({"message": "bad", "reply_to": "one"}))
        .await;
    assert_eq!(ann.recv().await["for"], "message");
    // Over HTTP too.
    let refused = server
        .http(
            "POST",
            "/chat/send/",
            Some(r#"{"message": "x", "room": "thread", "reply_to": 5}"#),
        )
        .await;
    assert_eq!(refused.status, 400, "{refused:?}");
    ann.send_json(json!({"delete": 1})).await;
    next_event(&mut ann).await;
    let history = server.history("?room=thread").await;
    assert_eq!(history[1]["reply_to"], 1, "the reply stays");
    assert_eq!(history[0]["deleted"], true);
}

#[tokio::test]
async fn read_positions_move_forward_for_every_connection_of_the_user() {
    let server = Server::start(&[]).await;
    for n in 0..5 {
        server.post_message("inbox", json!(n)).await;
    }
    server.post_message("other", json!("x")).await;
    let mut tab1 = server.connect("/ws/chat/inbox/?meta=1&name=Ann").await;
    let mut tab2 = server.connect("/ws/chat/other/?meta=1&name=Ann").await;
    tab1.send_json(json!({"read": 3})).await;
    assert_eq!(
        tab2.recv().await,
        json!({"event": "read", "room": "inbox", "id": 3})
    );
    tab1.send_json(json!({"read": 2})).await;
    assert_eq!(tab2.recv().await["id"], 3, "never back");
    // Over HTTP, as the same (chosen) name: POST /chat/read/ and GET /chat/unread/.
    let marked = server
        .http(
            "POST",
            "/chat/read/?name=Ann",
            Some(r#"{"room": "other", "id": 1}"#),
        )
        .await;
    assert_eq!(marked.json(), json!({"room": "other", "id": 1}));
    assert_eq!(
        tab1.recv().await,
        json!({"event": "read", "room": "other", "id": 1})
    );
    assert_eq!(
        tab2.recv().await,
        json!({"event": "read", "room": "other", "id": 1})
    );
    let unread = server
        .http("GET", "/chat/unread/?name=Ann", None)
        .await
        .json();
    assert_eq!(
        unread,
        json!({"rooms": [
            {"room": "inbox", "unread": 2, "last_id": 5, "read_id": 3},
            {"room": "other", "unread": 0, "last_id": 1, "read_id": 1},
        ]})
    );
    let anonymous = server.http("GET", "/chat/unread/", None).await;
    assert_eq!(anonymous.status, 400, "{anonymous:?}");
}

/// On two Redis nodes: a change made through one reaches members of the other; reactions from
/// both at once count right; a read on one clears the other's badge; a resume on the other gets
/// what changed.
/// Members with `receipts=1` are told how far others read, the furthest of each second; others
/// are not.
#[tokio::test]
async fn read_receipts_tell_who_read_how_far() {
    let server = Server::start(&[]).await;
    let mut ann = server.connect("/ws/chat/seen/?receipts=1&name=Ann").await;
    let mut plain = server.connect("/ws/chat/seen/?name=Cy").await;
    let mut bo = server.connect("/ws/chat/seen/?name=Bo").await;
    for n in 1..=3 {
        bo.send_json(json!({"message": n})).await;
        bo.recv().await;
        ann.recv().await;
        plain.recv().await;
    }
    for id in 1..=3 {
        bo.send_json(json!({"read": id})).await;
    }
    // Read within a second of each other: one receipt, or two across a second's edge.
    let mut receipts = Vec::new();
    loop {
        let receipt = ann.recv().await;
        assert_eq!(
            (&receipt["event"], &receipt["room"], &receipt["user"]),
            (&json!("seen"), &json!("seen"), &json!({"name": "Bo"}))
        );
        let id = receipt["id"].as_u64().unwrap();
        receipts.push(id);
        if id == 3 {
            break;
        }
    }
    assert!(receipts.len() <= 2, "{receipts:?}");
    // Over HTTP too; a member without receipts hears nothing of them.
    let read = server
        .http(
            "POST",
            "/chat/read/?name=Dee",
            Some(r#"{"room": "seen", "id": 2}"#),
        )
        .await;
    assert_eq!(read.status, 200, "{read:?}");
    assert_eq!(
        ann.recv().await,
        json!({"event": "seen", "room": "seen", "user": {"name": "Dee"}, "id": 2})
    );
    plain.expect_silence().await;
}

#[tokio::test]
async fn changes_agree_across_two_redis_nodes() {
    let redis = crate::support::RedisServer::start().await;
    let (a, b) = (
        Server::node(&redis, &[]).await,
        Server::node(&redis, &[]).await,
    );
    let mut on_a = a.connect("/ws/chat/both/?meta=1&name=Ann").await;
    let mut on_b = b.connect("/ws/chat/both/?meta=1&name=Bo").await;
    for n in 1..=3 {
        on_a.send_json(json!({"message": n})).await;
        on_a.recv().await;
        on_b.recv().await;
    }
    on_a.send_json(json!({"react": 1, "emoji": "👍"})).await;
    on_b.send_json(json!({"react": 1, "emoji": "👍"})).await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.push(next_event(&mut on_b).await["count"].clone());
    }
    seen.sort_by_key(|count| count.as_u64());
    assert_eq!(seen, [json!(1), json!(2)]);
    on_a.send_json(json!({"delete": 2})).await;
    let deleted = loop {
        let event = next_event(&mut on_b).await;
        if event["event"] == "deleted" {
            break event;
        }
    };
    assert_eq!(deleted["id"], 2);
    let history = a.history("?room=both").await;
    assert_eq!(history[0]["reactions"]["👍"]["count"], 2);
    assert_eq!(history[1]["deleted"], true);
    // A read on node A reaches Ann's connection on node B, and a receipt Dee there.
    let mut ann_on_b = b.connect("/ws/chat/elsewhere/?name=Ann").await;
    let mut dee_on_b = b.connect("/ws/chat/both/?receipts=1&name=Dee").await;
    on_a.send_json(json!({"read": 3})).await;
    assert_eq!(
        ann_on_b.recv().await,
        json!({"event": "read", "room": "both", "id": 3})
    );
    assert_eq!(
        dee_on_b.recv().await,
        json!({"event": "seen", "room": "both", "user": {"name": "Ann"}, "id": 3})
    );
    // Resuming on node B after 1: the reaction state, the deletion, then 3.
    let mut resumed = b.connect("/ws/chat/both/?meta=1&name=Cy&since=1").await;
    let mut frames = Vec::new();
    loop {
        let frame = resumed.recv().await;
        if frame["event"] == "caught_up" {
            break;
        }
        frames.push(frame);
    }
    assert!(
        frames
            .iter()
            .any(|f| f["event"] == "reactions" && f["id"] == 1)
    );
    assert!(
        frames
            .iter()
            .any(|f| f["event"] == "deleted" && f["id"] == 2)
    );
    assert!(frames.iter().any(|f| f["id"] == 3 && f["message"] == 3));
}
