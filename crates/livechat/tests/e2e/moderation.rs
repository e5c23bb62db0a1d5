//! Moderation through the server API: bans and mutes (durable, on every node, ending by
//! themselves), disconnecting a user everywhere, one message to many rooms, what is known of a
//! room, and erasing everything a user wrote.

use serde_json::{Value, json};

use crate::support::{RedisServer, Server, eventually, handshake};

const SECRET: &str = "moderation-e2e-secret-of-a-decent-length";
const KEY: &str = "moderation-e2e-server-key";

fn token(sub: &str, extra: Value) -> String {
    crate::support::signed_token(SECRET, sub, extra)
}

const SECURED: [&str; 6] = [
    "--auth",
    "required",
    "--jwt-secret",
    SECRET,
    "--api-key",
    KEY,
];

/// Reads frames until an error frame.
async fn next_error(client: &mut crate::support::Client) -> Value {
    loop {
        let frame = client.recv().await;
        if frame.get("error").is_some() {
            return frame;
        }
    }
}

#[tokio::test]
async fn a_ban_closes_the_users_connections_there_refuses_new_ones_and_can_be_lifted() {
    let server = Server::start(&SECURED).await;
    let bob = token("bob", json!({}));
    let mut in_room = server
        .connect(&format!("/ws/chat/banned/?token={bob}"))
        .await;
    let mut elsewhere = server
        .connect(&format!("/ws/chat/other/?token={bob}"))
        .await;

    // Only moderators may: a plain token is refused, a `moderate` token is not.
    let order = json!({"user": "bob", "room": "banned", "reason": "spam", "mode": "ban"});
    let plain = server
        .call(&bob, "POST", "/api/bans", Some(order.clone()))
        .await;
    assert_eq!(plain.status, 403, "{plain:?}");
    let moderator = token("mod", json!({"moderate": true}));
    let answer = server
        .call(&moderator, "POST", "/api/bans", Some(order))
        .await;
    assert_eq!(answer.status, 201, "{answer:?}");
    let ban = answer.json();
    assert_eq!(
        (&ban["user"], &ban["room"], &ban["mode"], &ban["created_by"]),
        (
            &json!("bob"),
            &json!("banned"),
            &json!("ban"),
            &json!("mod")
        )
    );
    assert!(ban["until"].is_null() && ban["created_at"].as_u64().is_some());

    assert_eq!(
        in_room.recv_close().await,
        (4003, "banned: spam".to_owned())
    );
    // Other rooms are untouched.
    server
        .post_message_as(KEY, "other", json!("still here"))
        .await;
    assert_eq!(elsewhere.recv().await["message"], "still here");

    let refused = handshake(server.addr, &format!("/ws/chat/banned/?token={bob}")).await;
    assert_eq!(refused.status, 403, "{refused:?}");
    assert_eq!(refused.json(), json!({"error": "banned", "reason": "spam"}));
    // A plain GET of the same URL (what a browser can see of it) gets the same refusal; one the
    // server would let in gets 426, without a token 401.
    let banned = server
        .http("GET", &format!("/ws/chat/banned/?token={bob}"), None)
        .await;
    assert_eq!((banned.status, banned.json()), (403, refused.json()));
    let admitted = server
        .http("GET", &format!("/ws/chat/other/?token={bob}"), None)
        .await;
    assert_eq!(admitted.status, 426, "{admitted:?}");
    assert!(
        admitted
            .headers
            .to_ascii_lowercase()
            .contains("upgrade: websocket"),
        "{admitted:?}"
    );
    let anonymous = server.http("GET", "/ws/chat/other/", None).await;
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
    let send = server
        .call(
            &bob,
            "POST",
            "/chat/send/",
            Some(json!({"room": "banned", "message": "let me in"})),
        )
        .await;
    assert_eq!(send.status, 403, "{send:?}");
    let read = server
        .call(&bob, "GET", "/chat/history/?room=banned", None)
        .await;
    assert_eq!(read.status, 403, "{read:?}");

    let listed = server.call(KEY, "GET", "/api/bans?user=bob", None).await;
    assert_eq!(listed.json()["bans"], json!([ban.clone()]));
    let none = server.call(KEY, "GET", "/api/bans?room=other", None).await;
    assert_eq!(none.json()["bans"], json!([]));

    let id = ban["id"].as_str().unwrap();
    let lifted = server
        .call(KEY, "DELETE", &format!("/api/bans/{id}"), None)
        .await;
    assert_eq!(lifted.status, 200, "{lifted:?}");
    let again = server
        .call(KEY, "DELETE", &format!("/api/bans/{id}"), None)
        .await;
    assert_eq!(again.status, 404, "{again:?}");
    let mut back = server
        .connect(&format!("/ws/chat/banned/?token={bob}"))
        .await;
    back.send_json(json!({"message": "back"})).await;
    assert_eq!(back.recv().await["message"], "back");
}

#[tokio::test]
async fn a_mute_keeps_the_user_reading_refuses_its_writes_and_ends_by_itself() {
    let server = Server::start(&SECURED).await;
    let bob = token("bob", json!({}));
    let mut muted = server
        .connect(&format!("/ws/chat/quiet/?meta=1&token={bob}"))
        .await;
    muted.send_json(json!({"message": "before"})).await;
    let before = muted.recv().await["id"].as_u64().unwrap();

    let order = json!({"user": "bob", "mode": "mute", "duration": 2, "reason": "cool off"});
    let answer = server.call(KEY, "POST", "/api/bans", Some(order)).await;
    assert_eq!(answer.status, 201, "{answer:?}");
    let until = answer.json()["until"].as_u64().unwrap();
    assert_eq!(answer.json()["created_by"], "server");

    muted
        .send_json(json!({"message": "let me speak", "nonce": "n-1"}))
        .await;
    assert_eq!(
        next_error(&mut muted).await,
        json!({"error": "muted", "for": "message", "nonce": "n-1", "reason": "cool off", "until": until})
    );
    muted.send_json(json!({"typing": true})).await;
    assert_eq!(next_error(&mut muted).await["for"], "typing");
    muted
        .send_json(json!({"react": before, "emoji": "👍"}))
        .await;
    assert_eq!(next_error(&mut muted).await["error"], "muted");
    muted
        .send_json(json!({"edit": before, "message": "changed"}))
        .await;
    assert_eq!(next_error(&mut muted).await["for"], "edit");
    let send = server
        .call(
            &bob,
            "POST",
            "/chat/send/",
            Some(json!({"room": "quiet", "message": "over http"})),
        )
        .await;
    assert_eq!(send.status, 403, "{send:?}");
    assert_eq!(send.json()["error"], "muted");
    // Still reading.
    server
        .post_message_as(KEY, "quiet", json!("others talk"))
        .await;
    assert_eq!(muted.recv().await["message"], "others talk");

    // Two seconds on, without anyone lifting it, its messages go through again.
    let mut n = 0;
    eventually("the mute ended", || {
        n += 1;
        let bob = bob.clone();
        let server = &server;
        async move {
            let send = server
                .call(
                    &bob,
                    "POST",
                    "/chat/send/",
                    Some(json!({"room": "quiet", "message": n})),
                )
                .await;
            send.status == 200
        }
    })
    .await;
    let listed = server.call(KEY, "GET", "/api/bans", None).await;
    assert_eq!(listed.json()["bans"], json!([]));
}

#[tokio::test]
async fn disconnect_closes_every_connection_of_the_user_and_says_whether_to_come_back() {
    let server = Server::start(&SECURED).await;
    let (bob, ann) = (token("bob", json!({})), token("ann", json!({})));
    let mut first = server.connect(&format!("/ws/chat/a/?token={bob}")).await;
    let mut second = server.connect(&format!("/ws/chat/b/?token={bob}")).await;
    let mut other = server.connect(&format!("/ws/chat/a/?token={ann}")).await;
    let order = json!({"user": "bob"});
    let answer = server
        .call(KEY, "POST", "/api/disconnect", Some(order))
        .await;
    assert_eq!(answer.status, 202, "{answer:?}");
    for client in [&mut first, &mut second] {
        assert_eq!(client.recv_close().await, (4003, "disconnected".to_owned()));
    }
    let mut third = server.connect(&format!("/ws/chat/a/?token={bob}")).await;
    let order = json!({"user": "bob", "reason": "account closed", "reconnect": false});
    server
        .call(KEY, "POST", "/api/disconnect", Some(order))
        .await;
    assert_eq!(
        third.recv_close().await,
        (4004, "disconnected: account closed".to_owned())
    );
    server.post_message_as(KEY, "a", json!("ann stays")).await;
    assert_eq!(other.recv().await["message"], "ann stays");
    for bad in [
        json!({}),
        json!({"user": ""}),
        json!({"user": "bob", "reason": "x".repeat(201)}),
        json!({"user": "bob", "extra": 1}),
    ] {
        let refused = server
            .call(KEY, "POST", "/api/disconnect", Some(bad.clone()))
            .await;
        assert_eq!(refused.status, 400, "{bad}: {refused:?}");
    }
}

#[tokio::test]
async fn bans_are_kept_across_a_restart() {
    let mut server = Server::start(&SECURED).await;
    let order = json!({"user": "bob", "reason": "kept"});
    let answer = server.call(KEY, "POST", "/api/bans", Some(order)).await;
    assert_eq!(answer.status, 201, "{answer:?}");
    server.stop().await;
    server.restart().await;
    let bob = token("bob", json!({}));
    let refused = handshake(server.addr, &format!("/ws/chat/any/?token={bob}")).await;
    assert_eq!(refused.status, 403, "{refused:?}");
    assert_eq!(refused.json()["reason"], "kept");
    let listed = server.call(KEY, "GET", "/api/bans", None).await;
    assert_eq!(listed.json()["bans"][0]["reason"], "kept");
}

/// With auth off a ban names the name a user chose.
#[tokio::test]
async fn with_auth_off_a_ban_names_a_chosen_name() {
    let server = Server::start(&["--api-key", KEY]).await;
    let mut troll = server.connect("/ws/chat/open/?name=troll").await;
    let order = json!({"user": "troll", "room": "open", "reason": "trolling"});
    server.call(KEY, "POST", "/api/bans", Some(order)).await;
    assert_eq!(
        troll.recv_close().await,
        (4003, "banned: trolling".to_owned())
    );
    let refused = handshake(server.addr, "/ws/chat/open/?name=troll").await;
    assert_eq!(refused.status, 403, "{refused:?}");
    server.connect("/ws/chat/open/?name=someone").await;
}

#[tokio::test]
async fn broadcast_writes_each_room_with_its_own_id() {
    let server = Server::start(&SECURED).await;
    let bob = token("bob", json!({}));
    server
        .post_message_as(KEY, "news-1", json!("earlier"))
        .await;
    let mut reader = server
        .connect(&format!("/ws/chat/news-2/?token={bob}"))
        .await;
    let order = json!({
        "rooms": ["news-1", "news-2", "news-3"],
        "message": {"text": "maintenance at noon"},
        "user": {"id": "ops", "name": "Operations"},
        "nonce": "maintenance-1",
    });
    let answer = server
        .call(KEY, "POST", "/api/broadcast", Some(order.clone()))
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let rooms = answer.json()["rooms"].clone();
    let ids: Vec<(Value, Value)> = rooms
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["room"].clone(), r["id"].clone()))
        .collect();
    assert_eq!(
        ids,
        [
            (json!("news-1"), json!(2)),
            (json!("news-2"), json!(1)),
            (json!("news-3"), json!(1))
        ]
    );
    assert_eq!(reader.recv().await["message"], order["message"]);
    let history = server
        .call(KEY, "GET", "/chat/history/?room=news-3", None)
        .await;
    assert_eq!(
        history.json()["chat_history"][0]["user"],
        json!({"id": "ops", "name": "Operations"})
    );
    // Sent again with its nonce: nothing stored twice.
    server
        .call(KEY, "POST", "/api/broadcast", Some(order))
        .await;
    let history = server
        .call(KEY, "GET", "/chat/history/?room=news-1", None)
        .await;
    assert_eq!(history.json()["chat_history"].as_array().unwrap().len(), 2);

    let many: Vec<String> = (0..101).map(|n| format!("r{n}")).collect();
    for bad in [
        json!({"rooms": [], "message": 1}),
        json!({"rooms": many, "message": 1}),
        json!({"rooms": ["a", "a"], "message": 1}),
        json!({"rooms": ["a"]}),
        json!({"rooms": ["bad room"], "message": 1}),
    ] {
        let refused = server
            .call(KEY, "POST", "/api/broadcast", Some(bad.clone()))
            .await;
        assert_eq!(refused.status, 400, "{bad}: {refused:?}");
    }
    let forbidden = server
        .call(
            &bob,
            "POST",
            "/api/broadcast",
            Some(json!({"rooms": ["a"], "message": 1})),
        )
        .await;
    assert_eq!(forbidden.status, 403, "{forbidden:?}");
}

#[tokio::test]
async fn a_rooms_info_tells_members_numbering_holdings_and_bans() {
    let server = Server::start(&SECURED).await;
    let (bob, ann) = (token("bob", json!({})), token("ann", json!({})));
    let _b = server.connect(&format!("/ws/chat/info/?token={bob}")).await;
    let _a = server.connect(&format!("/ws/chat/info/?token={ann}")).await;
    for n in 0..3 {
        server.post_message_as(KEY, "info", json!(n)).await;
    }
    let order = json!({"user": "carl", "room": "info", "mode": "mute"});
    server.call(KEY, "POST", "/api/bans", Some(order)).await;
    // Presence is gathered once a second: wait until both members are counted.
    let info = loop {
        let info = server
            .call(KEY, "GET", "/api/rooms/info", None)
            .await
            .json();
        if info["members"] == 2 {
            break info;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(
        (&info["room"], &info["last_id"], &info["messages"]),
        (&json!("info"), &json!(3), &json!(3))
    );
    assert!(info["bytes"].as_u64().unwrap() > 0);
    assert!(info["epoch"].as_str().is_some_and(|e| !e.is_empty()));
    assert_eq!(info["users"].as_array().unwrap().len(), 2);
    assert_eq!(info["bans"][0]["user"], "carl");
    let bad = server.call(KEY, "GET", "/api/rooms/bad%20room", None).await;
    assert_eq!(bad.status, 400, "{bad:?}");
    let plain = server.call(&bob, "GET", "/api/rooms/info", None).await;
    assert_eq!(plain.status, 403, "{plain:?}");
}

#[tokio::test]
async fn a_users_messages_are_erased_in_bounded_passes() {
    let server = Server::start(&SECURED).await;
    let (bob, ann) = (token("bob", json!({})), token("ann", json!({})));
    let mut watcher = server
        .connect(&format!("/ws/chat/e-2/?meta=1&token={ann}"))
        .await;
    for room in ["e-1", "e-2"] {
        for n in 0..3 {
            for who in [&bob, &ann] {
                let body = json!({"room": room, "message": n});
                let sent = server.call(who, "POST", "/chat/send/", Some(body)).await;
                assert_eq!(sent.status, 200, "{sent:?}");
            }
        }
    }
    // 12 messages, 6 of them bob's, looked at 5 at a time.
    let mut from: Option<String> = None;
    let (mut deleted, mut scanned, mut passes) = (0, 0, 0);
    loop {
        let path = match &from {
            Some(from) => format!("/api/users/bob/messages?limit=5&from={from}"),
            None => "/api/users/bob/messages?limit=5".to_owned(),
        };
        let pass = server.call(KEY, "DELETE", &path, None).await;
        assert_eq!(pass.status, 200, "{pass:?}");
        let pass = pass.json();
        passes += 1;
        deleted += pass["deleted"].as_u64().unwrap();
        scanned += pass["scanned"].as_u64().unwrap();
        assert!(pass["scanned"].as_u64().unwrap() <= 5);
        if pass["done"] == true {
            assert!(pass["next"].is_null());
            break;
        }
        from = pass["next"].as_str().map(str::to_owned);
    }
    assert_eq!((deleted, scanned, passes), (6, 12, 3));
    for room in ["e-1", "e-2"] {
        let history = server
            .call(KEY, "GET", &format!("/chat/history/?room={room}"), None)
            .await
            .json();
        for item in history["chat_history"].as_array().unwrap() {
            match item["deleted"] == true {
                true => assert!(item.get("user").is_none() && item.get("message").is_none()),
                false => assert_eq!(item["user"]["id"], "ann"),
            }
        }
    }
    let mut told = 0;
    while told < 3 {
        let frame = watcher.recv().await;
        if frame["event"] == "deleted" {
            told += 1;
        }
    }
    let bad = server
        .call(KEY, "DELETE", "/api/users/bob/messages?from=nonsense", None)
        .await;
    assert_eq!(bad.status, 400, "{bad:?}");
    let bad = server
        .call(KEY, "DELETE", "/api/users/bob/messages?limit=0", None)
        .await;
    assert_eq!(bad.status, 400, "{bad:?}");
}

/// Two Redis nodes: a ban set through node A closes the user's connection on node B at once,
/// and B refuses it afterwards; a disconnect through B closes connections on A.
#[tokio::test]
async fn a_ban_set_on_one_node_holds_on_the_other() {
    let redis = RedisServer::start().await;
    let (a, b) = (
        Server::node(&redis, &SECURED).await,
        Server::node(&redis, &SECURED).await,
    );
    let bob = token("bob", json!({}));
    let mut on_b = b.connect(&format!("/ws/chat/shared/?token={bob}")).await;
    let order = json!({"user": "bob", "room": "shared", "reason": "across"});
    let answer = a.call(KEY, "POST", "/api/bans", Some(order)).await;
    assert_eq!(answer.status, 201, "{answer:?}");
    assert_eq!(on_b.recv_close().await, (4003, "banned: across".to_owned()));
    eventually("node B refuses the banned user", || async {
        handshake(b.addr, &format!("/ws/chat/shared/?token={bob}"))
            .await
            .status
            == 403
    })
    .await;
    let listed = b.call(KEY, "GET", "/api/bans", None).await;
    assert_eq!(listed.json()["bans"][0]["reason"], "across");

    let mut on_a = a.connect(&format!("/ws/chat/elsewhere/?token={bob}")).await;
    let order = json!({"user": "bob", "reconnect": false});
    b.call(KEY, "POST", "/api/disconnect", Some(order)).await;
    assert_eq!(on_a.recv_close().await.0, 4004);
}
