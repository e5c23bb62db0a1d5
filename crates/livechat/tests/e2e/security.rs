//! Safe in front of real users: browser origins, tokens and identity, rate limits, dead peers.

use livechat::auth::{TokenRequest, issue};
use serde_json::json;

use crate::support::{PATIENCE, Server, eventually, handshake_with, http};

const SECRET: &str = "e2e-secret";
const API_KEY: &str = "e2e-server-key";

fn token(sub: &str, rooms: Option<&[&str]>, ttl_seconds: i64) -> String {
    issue(
        SECRET,
        &TokenRequest {
            sub: sub.into(),
            name: Some(format!("{sub} name")),
            rooms: rooms.map(|rooms| rooms.iter().map(|r| r.to_string()).collect()),
            publish: true,
            moderate: false,
            ttl_seconds,
            issuer: None,
            audience: None,
        },
    )
    .unwrap()
}

async fn secured() -> Server {
    Server::start(&[
        "--auth",
        "required",
        "--jwt-secret",
        SECRET,
        "--api-key",
        API_KEY,
    ])
    .await
}

/// A WebSocket opened by a page at `origin` is served: its message comes back.
async fn chats_from(server: &Server, origin: &str) {
    let mut client = server
        .connect_with("/ws/chat/lobby/", &[("Origin", origin)])
        .await
        .unwrap_or_else(|e| panic!("{origin}: {e}"));
    client.send_json(json!({"message": origin})).await;
    assert_eq!(client.recv().await, json!({"message": origin}));
}

#[tokio::test]
async fn foreign_browser_origins_are_refused_before_the_upgrade_and_on_the_api() {
    let server = Server::start(&[
        "--allowed-origins",
        "https://app.example.com,https://*.example.org",
    ])
    .await;
    let evil = [("Origin", "https://evil.example")];
    let refused = handshake_with(server.addr, "/ws/chat/lobby/", &evil).await;
    assert_eq!(refused.status, 403, "{refused:?}");
    assert_eq!(refused.json(), json!({"error": "origin not allowed"}));
    let body = br#"{"message": "csrf"}"#;
    let headers = [
        ("Origin", "https://evil.example"),
        ("Content-Type", "text/plain"),
    ];
    let posted = http(server.addr, "POST", "/chat/send/", Some(body), &headers).await;
    assert_eq!(posted.status, 403, "{posted:?}");
    assert!(
        server.history("?room=lobby").await.is_empty(),
        "nothing stored"
    );

    // Its own origin, listed ones, and clients without Origin are served.
    let own = format!("http://{}", server.addr);
    for origin in [
        own.as_str(),
        "https://app.example.com",
        "https://chat.example.org",
    ] {
        chats_from(&server, origin).await;
    }
    let listed = [("Origin", "https://app.example.com")];
    let posted = http(server.addr, "POST", "/chat/send/", Some(body), &listed).await;
    assert_eq!(posted.status, 200, "{posted:?}");
    assert!(
        posted
            .headers
            .to_ascii_lowercase()
            .contains("access-control-allow-origin: https://app.example.com")
    );

    // CORS preflight: answered for allowed origins only.
    let preflight = |origin: &'static str| {
        [
            ("Origin", origin),
            ("Access-Control-Request-Method", "POST"),
        ]
    };
    let allowed = http(
        server.addr,
        "OPTIONS",
        "/chat/send/",
        None,
        &preflight("https://app.example.com"),
    )
    .await;
    assert_eq!(allowed.status, 204, "{allowed:?}");
    let foreign = http(
        server.addr,
        "OPTIONS",
        "/chat/send/",
        None,
        &preflight("https://evil.example"),
    )
    .await;
    assert_eq!(foreign.status, 403, "{foreign:?}");
}

/// The replaced service's rule (Django Channels' `AllowedHostsOriginValidator`): a page on the
/// host the request was addressed to, at any port, and loopback pages on a loopback request,
/// are served with CORS; `self` keeps only the exact own origin.
#[tokio::test]
async fn pages_on_the_same_host_at_another_port_are_served_unless_self_is_set() {
    let server = Server::start(&[]).await;
    let other_port = format!("http://127.0.0.1:{}", server.addr.port() ^ 1);
    for origin in [
        other_port.as_str(),
        "http://localhost:8000",
        "http://[::1]:8000",
    ] {
        chats_from(&server, origin).await;
        let body = br#"{"message": "from the app's page"}"#;
        let posted = http(
            server.addr,
            "POST",
            "/chat/send/",
            Some(body),
            &[("Origin", origin)],
        )
        .await;
        assert_eq!(posted.status, 200, "{posted:?}");
        let allow = format!("access-control-allow-origin: {origin}");
        assert!(
            posted.headers.to_ascii_lowercase().contains(&allow),
            "{posted:?}"
        );
        let preflight = [
            ("Origin", origin),
            ("Access-Control-Request-Method", "POST"),
        ];
        let answered = http(server.addr, "OPTIONS", "/chat/send/", None, &preflight).await;
        assert_eq!(answered.status, 204, "{answered:?}");
    }
    for origin in ["http://127.0.0.2:8000", "http://example.com", "null"] {
        let refused = handshake_with(server.addr, "/ws/chat/lobby/", &[("Origin", origin)]).await;
        assert_eq!(refused.status, 403, "{origin}: {refused:?}");
    }

    let strict = Server::start(&["--allowed-origins", "self"]).await;
    let own = format!("http://{}", strict.addr);
    assert!(
        strict
            .connect_with("/ws/chat/lobby/", &[("Origin", own.as_str())])
            .await
            .is_ok()
    );
    for origin in ["http://localhost:8000", other_port.as_str()] {
        let refused = handshake_with(strict.addr, "/ws/chat/lobby/", &[("Origin", origin)]).await;
        assert_eq!(refused.status, 403, "{origin}: {refused:?}");
    }
}

#[tokio::test]
async fn tokens_are_checked_at_the_handshake() {
    let server = secured().await;
    let cases = [
        ("/ws/chat/lobby/".to_owned(), 401, "no token"),
        ("/ws/chat/lobby/?token=garbage".to_owned(), 401, "malformed"),
        (
            format!("/ws/chat/lobby/?token={}", token("u1", None, -60)),
            401,
            "expired",
        ),
        (
            format!(
                "/ws/chat/lobby/?token={}",
                issue("another-secret", &TokenRequest::for_user("u1")).unwrap()
            ),
            401,
            "badly signed",
        ),
        (
            format!(
                "/ws/chat/ops/?token={}",
                token("u1", Some(&["lobby", "dev-*"]), 60)
            ),
            403,
            "room not allowed",
        ),
    ];
    for (path, status, case) in cases {
        let answer = handshake_with(server.addr, &path, &[]).await;
        assert_eq!(answer.status, status, "{case}: {answer:?}");
        assert!(answer.json()["error"].is_string(), "{case}");
    }
    // Allowed: an exact room, a prefix, and the token in the Authorization header.
    let rooms = Some(&["lobby", "dev-*"][..]);
    server
        .connect(&format!(
            "/ws/chat/dev-42/?token={}",
            token("u1", rooms, 60)
        ))
        .await;
    let bearer = format!("Bearer {}", token("u1", rooms, 60));
    assert!(
        server
            .connect_with("/ws/chat/lobby/", &[("Authorization", &bearer)])
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn messages_carry_the_verified_author_and_plain_frames_stay_the_seeds() {
    let server = secured().await;
    let alice = token("alice", None, 60);
    let mut meta = server
        .connect(&format!("/ws/chat/lobby/?meta=1&token={alice}"))
        .await;
    let mut plain = server
        .connect(&format!("/ws/chat/lobby/?token={alice}"))
        .await;
    meta.send_json(json!({"message": "hi", "user": {"id": "root", "name": "Admin"}}))
        .await;
    let framed = meta.recv().await;
    assert_eq!(
        framed["user"],
        json!({"id": "alice", "name": "alice name"}),
        "{framed}"
    );
    assert_eq!(plain.recv().await, json!({"message": "hi"}));

    // History needs a token too, and shows the author.
    let unauthorized = server.http("GET", "/chat/history/?room=lobby", None).await;
    assert_eq!(unauthorized.status, 401);
    let history = server.get_as(&alice, "/chat/history/?room=lobby").await;
    assert_eq!(history.json()["chat_history"][0]["user"]["id"], "alice");

    // The API key publishes for a user of the backend's choosing.
    let key = format!("Bearer {API_KEY}");
    let body = json!({"message": "from the backend", "room": "lobby", "user": {"id": "bob", "name": "Bob"}});
    let sent = http(
        server.addr,
        "POST",
        "/chat/send/",
        Some(body.to_string().as_bytes()),
        &[("Authorization", &key)],
    )
    .await;
    assert_eq!(sent.status, 200, "{sent:?}");
    assert_eq!(
        meta.recv().await["user"],
        json!({"id": "bob", "name": "Bob"})
    );
    // A user token publishes as its own user, whatever the body says.
    let bearer = format!("Bearer {alice}");
    let sent = http(
        server.addr,
        "POST",
        "/chat/send/",
        Some(body.to_string().as_bytes()),
        &[("Authorization", &bearer)],
    )
    .await;
    assert_eq!(sent.status, 200, "{sent:?}");
    assert_eq!(meta.recv().await["user"]["id"], "alice");
}

#[tokio::test]
async fn read_only_tokens_read_but_do_not_publish() {
    let server = secured().await;
    let reader = issue(
        SECRET,
        &TokenRequest {
            publish: false,
            moderate: false,
            ..TokenRequest::for_user("reader")
        },
    )
    .unwrap();
    let mut client = server
        .connect(&format!("/ws/chat/lobby/?token={reader}"))
        .await;
    client
        .send_json(json!({"message": "may I?", "nonce": "n-17"}))
        .await;
    let refused = client.recv().await;
    assert!(
        refused["error"].as_str().unwrap().contains("read-only"),
        "{refused}"
    );
    // The refusal names the publish it answers.
    assert_eq!(
        (&refused["for"], &refused["nonce"]),
        (&json!("message"), &json!("n-17"))
    );
    let bearer = format!("Bearer {reader}");
    let body = br#"{"message": "may I?"}"#;
    let posted = http(
        server.addr,
        "POST",
        "/chat/send/",
        Some(body),
        &[("Authorization", &bearer)],
    )
    .await;
    assert_eq!(posted.status, 403);
    let history = http(
        server.addr,
        "GET",
        "/chat/history/",
        None,
        &[("Authorization", &bearer)],
    )
    .await;
    assert_eq!(history.status, 200);
    assert_eq!(history.json()["chat_history"], json!([]));
}

#[tokio::test]
async fn the_room_list_shows_only_rooms_the_token_allows() {
    let server = secured().await;
    let _lobby = server
        .connect(&format!("/ws/chat/lobby/?token={}", token("a", None, 60)))
        .await;
    let _ops = server
        .connect(&format!("/ws/chat/ops/?token={}", token("a", None, 60)))
        .await;
    let listed = |bearer: String| async move {
        let answer = http(
            server.addr,
            "GET",
            "/chat/rooms/",
            None,
            &[("Authorization", &bearer)],
        )
        .await;
        let rooms = answer.json()["rooms"].as_array().unwrap().clone();
        rooms
            .iter()
            .map(|room| room["room"].as_str().unwrap().to_owned())
            .collect::<Vec<String>>()
    };
    // On several nodes the room list catches up a moment later.
    let key = format!("Bearer {API_KEY}");
    eventually("both rooms listed", || async {
        listed(key.clone()).await.len() == 2
    })
    .await;
    let limited = format!("Bearer {}", token("b", Some(&["lobby"]), 60));
    assert_eq!(listed(limited).await, ["lobby"]);
}

#[tokio::test]
async fn an_expiring_token_closes_with_4001_unless_refreshed() {
    let server = secured().await;
    // Expires in 2 s (well within the handshake's leeway).
    let short = token("carol", None, 2);
    let mut expiring = server
        .connect(&format!("/ws/chat/lobby/?token={short}"))
        .await;
    let mut refreshed = server
        .connect(&format!("/ws/chat/lobby/?token={short}"))
        .await;
    let fresh = token("carol", None, 600);
    refreshed.send_json(json!({"token": fresh})).await;
    // The refresh is confirmed, with the new expiry.
    let confirmed = refreshed.recv().await;
    assert_eq!(confirmed["event"], "token", "{confirmed}");
    assert!(
        confirmed["exp"].as_u64().unwrap() > unix_now() + 500,
        "{confirmed}"
    );
    // Someone else's token is refused, and changes nothing.
    refreshed
        .send_json(json!({"token": token("mallory", None, 600)}))
        .await;
    let refused = refreshed.recv().await;
    assert!(
        refused["error"].as_str().unwrap().contains("same user"),
        "{refused}"
    );
    assert_eq!(refused["for"], "token", "{refused}");
    assert_eq!(
        expiring.recv_close().await,
        (4001, "token expired".to_owned())
    );
    refreshed.send_json(json!({"message": "still here"})).await;
    assert_eq!(refreshed.recv().await, json!({"message": "still here"}));
}

#[tokio::test]
async fn auth_off_lets_a_client_choose_a_name() {
    let server = Server::start(&[]).await;
    let mut client = server.connect("/ws/chat/lobby/?meta=1&name=Dana").await;
    client.send_json(json!({"message": "hello"})).await;
    assert_eq!(client.recv().await["user"], json!({"name": "Dana"}));
    let body = json!({"message": "over http", "room": "lobby", "name": "Eve"}).to_string();
    server.http("POST", "/chat/send/", Some(&body)).await;
    assert_eq!(client.recv().await["user"], json!({"name": "Eve"}));
    let long = "x".repeat(65);
    let refused = handshake_with(server.addr, &format!("/ws/chat/lobby/?name={long}"), &[]).await;
    assert_eq!(refused.status, 400);
}

#[tokio::test]
async fn over_the_rate_limit_messages_are_refused_then_the_abuser_is_closed() {
    let server = Server::start(&["--rate-limit", "1/s", "--rate-burst", "5"]).await;
    let mut client = server.join("busy").await;
    for n in 0..7 {
        client.send_json(json!({"message": n})).await;
    }
    let (mut echoed, mut limited) = (0, 0);
    for _ in 0..7 {
        let frame = client.recv().await;
        if frame.get("message").is_some() {
            echoed += 1;
        } else {
            assert_eq!(frame["error"], "rate limited", "{frame}");
            assert!(frame["retry_after_ms"].as_u64().unwrap() > 0);
            limited += 1;
        }
    }
    assert_eq!((echoed, limited), (5, 2), "the burst, then refusals");
    // 1/s over 10 s, 3 times over: the 31st message in the window closes the connection.
    for n in 7..40 {
        client.send_json(json!({"message": n})).await;
    }
    assert_eq!(client.recv_close().await, (1008, "rate limit".to_owned()));
    assert_eq!(
        server.history("?room=busy").await.len(),
        5,
        "refused messages are not stored"
    );

    let body = br#"{"message": "x", "room": "busy"}"#;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(http(server.addr, "POST", "/chat/send/", Some(body), &[]).await);
    }
    let limited = statuses.last().unwrap();
    assert_eq!(limited.status, 429, "{limited:?}");
    assert!(
        limited
            .headers
            .to_ascii_lowercase()
            .contains("retry-after: 1")
    );
    assert_eq!(limited.json()["error"], "rate limited");
}

#[tokio::test]
async fn a_client_that_stops_answering_pings_is_closed_and_leaves_its_room() {
    let server = Server::start(&["--ping-interval", "1s", "--pong-timeout", "1s"]).await;
    // Answers pings: its reader keeps polling the socket.
    let mut alive = server.join("pinged").await;
    let (alive_done, mut alive_stop) = tokio::sync::oneshot::channel::<()>();
    let reader = tokio::spawn(async move {
        tokio::select! {
            event = alive.next_event_within(PATIENCE * 2) => panic!("the live client got {event:?}"),
            _ = &mut alive_stop => {}
        }
    });
    // Never reads, so never answers a ping.
    let _silent = server.join("pinged").await;
    let members = || async {
        let rooms = server.http("GET", "/chat/rooms/", None).await.json();
        rooms["rooms"][0]["members"].as_u64().unwrap_or(0)
    };
    eventually("both counted", || async { members().await == 2 }).await;
    eventually("the silent client dropped", || async {
        members().await == 1
    })
    .await;
    let _ = alive_done.send(());
    reader.await.unwrap();
}

#[tokio::test]
async fn presence_lists_token_users_to_those_who_may_read_the_room() {
    let server = secured().await;
    let alice = token("alice", Some(&["club"]), 60);
    let _member = server
        .connect(&format!("/ws/chat/club/?token={alice}"))
        .await;
    let bearer = format!("Bearer {alice}");
    let headers = [("Authorization", bearer.as_str())];
    let answer = http(
        server.addr,
        "GET",
        "/chat/presence/?room=club",
        None,
        &headers,
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        answer.json(),
        json!({"room": "club", "members": 1,
               "users": [{"id": "alice", "name": "alice name", "connections": 1}]})
    );
    let elsewhere = http(
        server.addr,
        "GET",
        "/chat/presence/?room=other",
        None,
        &headers,
    )
    .await;
    assert_eq!(elsewhere.status, 403, "{elsewhere:?}");
    let anonymous = server.http("GET", "/chat/presence/?room=club", None).await;
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token with exactly these claims, signed with the test secret.
fn signed(claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// The error a WebSocket handshake and an HTTP read with `token` get, which must agree.
async fn refusal(server: &Server, token: &str) -> (u16, String) {
    let answer = handshake_with(server.addr, &format!("/ws/chat/lobby/?token={token}"), &[]).await;
    let read = server.get_as(token, "/chat/history/").await;
    assert_eq!(read.status, answer.status, "{read:?} {answer:?}");
    assert_eq!(read.json(), answer.json());
    (
        answer.status,
        answer.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

/// With an issuer and an audience configured, a token must carry both, and right ones: a token
/// minted for another service with the same key carries neither.
#[tokio::test]
async fn a_configured_issuer_and_audience_must_be_present_and_right() {
    let issuer = "https://auth.example";
    let server = Server::start(&[
        "--auth",
        "required",
        "--jwt-secret",
        SECRET,
        "--jwt-issuer",
        issuer,
        "--jwt-audience",
        "chat",
    ])
    .await;
    let exp = unix_now() + 600;
    let good = signed(json!({"sub": "u1", "exp": exp, "iss": issuer, "aud": "chat"}));
    let cases = [
        // Neither: either one is named.
        (
            json!({"sub": "u1", "exp": exp}),
            "claim: this server expects",
        ),
        (
            json!({"sub": "u1", "exp": exp, "iss": issuer}),
            "no `aud` claim",
        ),
        (
            json!({"sub": "u1", "exp": exp, "aud": "chat"}),
            "no `iss` claim",
        ),
        (
            json!({"sub": "u1", "exp": exp, "iss": "https://other", "aud": "chat"}),
            "issuer (`iss`) is not",
        ),
        (
            json!({"sub": "u1", "exp": exp, "iss": issuer, "aud": "other"}),
            "audience (`aud`) does not name",
        ),
    ];
    for (claims, expected) in cases {
        let (status, error) = refusal(&server, &signed(claims.clone())).await;
        assert_eq!(status, 401, "{claims}: {error}");
        assert!(error.contains(expected), "{claims}: {error}");
    }
    // The right one connects, reads, and refreshes; a refresh without `aud` is refused.
    let mut client = server
        .connect(&format!("/ws/chat/lobby/?token={good}"))
        .await;
    let read = server.get_as(&good, "/chat/history/").await;
    assert_eq!(read.status, 200, "{read:?}");
    client
        .send_json(json!({"token": signed(json!({"sub": "u1", "exp": exp, "iss": issuer}))}))
        .await;
    let refused = client.recv().await;
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("no `aud` claim"),
        "{refused}"
    );
    assert_eq!(refused["for"], "token");
    // `livechat token` writes the issuer and audience it is configured with.
    let minted = std::process::Command::new(env!("CARGO_BIN_EXE_livechat"))
        .args(["token", "--sub", "u2", "--ttl", "10m"])
        .env("LIVECHAT_JWT_SECRET", SECRET)
        .env("LIVECHAT_JWT_ISSUER", issuer)
        .env("LIVECHAT_JWT_AUDIENCE", "chat")
        .output()
        .unwrap();
    let minted = String::from_utf8(minted.stdout).unwrap();
    server
        .connect(&format!("/ws/chat/lobby/?token={}", minted.trim()))
        .await;
}

/// Refusals say what is wrong in words, never the library's variant names; a numeric `sub`
/// (Django's user ids) is its decimal string; `?token=` works over HTTP too.
#[tokio::test]
async fn token_refusals_say_in_words_what_is_wrong() {
    let server = secured().await;
    let exp = unix_now() + 600;
    let cases = [
        ("e2e-server-kez".to_owned(), "not a JSON Web Token"),
        (
            issue("another-secret", &TokenRequest::for_user("u1")).unwrap(),
            "signature does not match",
        ),
        (token("u1", None, -60), "has expired"),
        (
            signed(json!({"sub": ["u1"], "exp": exp})),
            "`sub` is a string or an integer",
        ),
        (signed(json!({"sub": "u1"})), "no `exp` claim"),
        (signed(json!({"exp": exp})), "no `sub` claim"),
    ];
    for (token, expected) in cases {
        let (status, error) = refusal(&server, &token).await;
        assert_eq!(status, 401, "{error}");
        assert!(error.contains(expected), "{error}");
        for variant in [
            "InvalidSignature",
            "ExpiredSignature",
            "InvalidToken",
            "JSON error",
        ] {
            assert!(!error.contains(variant), "{error}");
        }
    }
    let numeric = signed(json!({"sub": 42, "name": "Ada", "exp": exp}));
    let mut client = server
        .connect(&format!("/ws/chat/lobby/?meta=1&token={numeric}"))
        .await;
    client.send_json(json!({"message": "I am 42"})).await;
    assert_eq!(
        client.recv().await["user"],
        json!({"id": "42", "name": "Ada"})
    );
    // `?token=` over HTTP, as on the WebSocket.
    let body = br#"{"message": "with a query token"}"#;
    let sent = http(
        server.addr,
        "POST",
        &format!("/chat/send/?token={numeric}"),
        Some(body),
        &[],
    )
    .await;
    assert_eq!(sent.status, 200, "{sent:?}");
    let read = http(
        server.addr,
        "GET",
        &format!("/chat/history/?token={numeric}"),
        None,
        &[],
    )
    .await;
    assert_eq!(read.json()["chat_history"].as_array().unwrap().len(), 2);
}

/// A token accepted within the clock-skew leeway (its `exp` a little past) keeps its connection
/// until that leeway ends, not a moment less.
#[tokio::test]
async fn a_token_accepted_under_the_leeway_keeps_its_connection_until_the_leeway_ends() {
    let server = secured().await;
    let exp = unix_now() - 2;
    let late = signed(json!({"sub": "u1", "exp": exp}));
    let mut client = server
        .connect(&format!("/ws/chat/lobby/?token={late}"))
        .await;
    client.send_json(json!({"message": "just in time"})).await;
    assert_eq!(client.recv().await, json!({"message": "just in time"}));
    assert_eq!(
        client.recv_close().await,
        (4001, "token expired".to_owned())
    );
    let closed_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        closed_at >= (exp + livechat::auth::LEEWAY_SECONDS) as f64,
        "closed early"
    );
}
