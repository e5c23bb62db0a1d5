//! The app's hooks (docs/hooks.md): the connect hook names callers from their cookies, the
//! publish hook accepts, rewrites or refuses messages; both fail closed, are bounded and counted.
//! The app here is a small HTTP server in the test, on a real port, whose answers each test sets
//! (the Django example in examples/django is the full app, tested by tests/django).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use crate::support::{Server, handshake_with, http};

/// What the app answers, by path: a status, a body, and a delay.
#[derive(Clone)]
struct Reply {
    status: u16,
    body: String,
    delay: Duration,
}

impl Reply {
    fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }
}

/// How the app answers a connect call: by the cookie's value.
type ConnectRule = Arc<dyn Fn(&Value) -> Reply + Send + Sync>;
/// How it answers a publish call: from the call.
type PublishRule = Arc<dyn Fn(&Value) -> Reply + Send + Sync>;

/// A call as the app received it: its body, and its signature header.
type Received = (Value, Option<String>);

#[derive(Clone)]
struct App {
    connect: Arc<Mutex<ConnectRule>>,
    publish: Arc<Mutex<PublishRule>>,
    connect_calls: Arc<AtomicUsize>,
    publish_calls: Arc<AtomicUsize>,
    /// Every call of each kind, as received (body and signature header).
    calls: Arc<Mutex<HashMap<&'static str, Vec<Received>>>>,
}

impl App {
    /// The app on a free port: admits `alice` and `bob` by cookie, refuses anyone else (401),
    /// and keeps alice out of `ops` (403); accepts every message.
    async fn start() -> (App, SocketAddr) {
        let app = App {
            connect: Arc::new(Mutex::new(Arc::new(default_connect))),
            publish: Arc::new(Mutex::new(Arc::new(|_| Reply::json(200, json!({}))))),
            connect_calls: Arc::default(),
            publish_calls: Arc::default(),
            calls: Arc::default(),
        };
        let router = axum::Router::new()
            .route("/connect", post(connect))
            .route("/publish", post(publish))
            .with_state(app.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        (app, addr)
    }

    fn on_connect(&self, rule: impl Fn(&Value) -> Reply + Send + Sync + 'static) {
        *self.connect.lock().unwrap() = Arc::new(rule);
    }

    fn on_publish(&self, rule: impl Fn(&Value) -> Reply + Send + Sync + 'static) {
        *self.publish.lock().unwrap() = Arc::new(rule);
    }

    fn last(&self, kind: &'static str) -> Received {
        self.calls.lock().unwrap()[kind].last().unwrap().clone()
    }

    /// The call of `kind` with this nonce.
    fn call_with_nonce(&self, kind: &'static str, nonce: &str) -> Value {
        let calls = self.calls.lock().unwrap();
        let call = calls[kind].iter().find(|(call, _)| call["nonce"] == nonce);
        call.unwrap().0.clone()
    }
}

fn default_connect(call: &Value) -> Reply {
    let cookie = call["headers"]["cookie"].as_str().unwrap_or_default();
    let user = cookie.strip_prefix("sessionid=").unwrap_or_default();
    match user {
        "alice" | "bob" if call["room"] == "ops" && user == "alice" => {
            Reply::json(403, json!({"error": "alice may not enter ops"}))
        }
        "alice" | "bob" => Reply::json(
            200,
            json!({"user": {"id": if user == "alice" { json!(1) } else { json!(2) }, "name": user}}),
        ),
        _ => Reply::json(401, json!({"error": "log in first"})),
    }
}

async fn answer(reply: Reply) -> Response {
    tokio::time::sleep(reply.delay).await;
    (
        StatusCode::from_u16(reply.status).unwrap(),
        [("content-type", "application/json")],
        reply.body,
    )
        .into_response()
}

fn record(app: &App, kind: &'static str, headers: &HeaderMap, body: &Bytes) -> Value {
    let call: Value = serde_json::from_slice(body).unwrap();
    let signature = headers
        .get("x-livechat-signature")
        .map(|value| value.to_str().unwrap().to_owned());
    app.calls
        .lock()
        .unwrap()
        .entry(kind)
        .or_default()
        .push((call.clone(), signature));
    call
}

async fn connect(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    app.connect_calls.fetch_add(1, Ordering::SeqCst);
    let call = record(&app, "connect", &headers, &body);
    let rule = app.connect.lock().unwrap().clone();
    answer(rule(&call)).await
}

async fn publish(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    app.publish_calls.fetch_add(1, Ordering::SeqCst);
    let call = record(&app, "publish", &headers, &body);
    let rule = app.publish.lock().unwrap().clone();
    answer(rule(&call)).await
}

async fn with_hooks(app: SocketAddr, args: &[&str]) -> Server {
    let connect = format!("http://{app}/connect");
    let publish = format!("http://{app}/publish");
    let mut all = vec![
        "--connect-hook",
        connect.as_str(),
        "--publish-hook",
        publish.as_str(),
        // Short enough for the "too slow" case (2 s) to fail, long enough that an app in this
        // test process answers in time while the rest of the suite loads the machine.
        "--hook-timeout",
        "1500ms",
    ];
    all.extend_from_slice(args);
    Server::start(&all).await
}

fn cookie(user: &str) -> String {
    format!("sessionid={user}")
}

/// The user a cookie signs in as, on the WebSocket and over HTTP; refusals pass the app's
/// status and reason; the app is told only the forwarded headers, the room, the address and
/// the query without the token, signed.
#[tokio::test]
async fn the_connect_hook_signs_callers_in_from_their_cookies() {
    let (app, addr) = App::start().await;
    let server = with_hooks(addr, &["--webhook-secret", "hook-secret"]).await;
    let alice = cookie("alice");
    let mut client = server
        .connect_with(
            "/ws/chat/lobby/?meta=1&token=not-for-the-app",
            &[("Cookie", &alice), ("X-Private", "secret")],
        )
        .await
        .unwrap();
    client.send_json(json!({"message": "hi"})).await;
    assert_eq!(
        client.recv().await["user"],
        json!({"id": "1", "name": "alice"})
    );
    let (call, signature) = app.last("connect");
    assert_eq!(call["room"], "lobby");
    assert_eq!(call["transport"], "websocket");
    assert_eq!(call["query"], json!({"meta": "1"}));
    assert_eq!(call["headers"], json!({"cookie": "sessionid=alice"}));
    assert_eq!(call["client_ip"], "127.0.0.1");
    assert!(signature.unwrap().starts_with("t="));

    let nobody = handshake_with(server.addr, "/ws/chat/lobby/", &[]).await;
    assert_eq!(
        (nobody.status, nobody.json()),
        (401, json!({"error": "log in first"}))
    );
    let ops = handshake_with(server.addr, "/ws/chat/ops/", &[("Cookie", &alice)]).await;
    assert_eq!(
        (ops.status, ops.json()),
        (403, json!({"error": "alice may not enter ops"}))
    );

    // Over HTTP: publish, history and presence as the cookie's user.
    let bob = cookie("bob");
    let body = br#"{"message": "over http", "room": "lobby", "name": "Mallory"}"#;
    let sent = http(
        server.addr,
        "POST",
        "/chat/send/",
        Some(body),
        &[("Cookie", &bob)],
    )
    .await;
    assert_eq!(sent.status, 200, "{sent:?}");
    assert_eq!(
        client.recv().await["user"],
        json!({"id": "2", "name": "bob"})
    );
    let read = http(
        server.addr,
        "GET",
        "/chat/history/?room=lobby",
        None,
        &[("Cookie", &bob)],
    )
    .await;
    assert_eq!(read.json()["chat_history"].as_array().unwrap().len(), 2);
    let anonymous = server.http("GET", "/chat/history/?room=lobby", None).await;
    assert_eq!(anonymous.status, 401);
    let presence = http(
        server.addr,
        "GET",
        "/chat/presence/?room=lobby",
        None,
        &[("Cookie", &bob)],
    )
    .await;
    assert_eq!(presence.json()["users"][0]["name"], "alice");
}

/// Whatever goes wrong with the app, nobody gets in (503), and it is counted.
#[tokio::test]
async fn a_broken_connect_hook_fails_closed() {
    let (app, addr) = App::start().await;
    let server = with_hooks(addr, &["--hook-cache", "0"]).await;
    let alice = cookie("alice");
    let cases: [(&str, Reply); 5] = [
        ("an error", Reply::json(500, json!({"error": "boom"}))),
        ("a redirect", Reply::json(302, json!({}))),
        (
            "nonsense",
            Reply {
                status: 200,
                body: "<html>".into(),
                delay: Duration::ZERO,
            },
        ),
        (
            "a user without an id",
            Reply::json(200, json!({"user": {"name": "x"}})),
        ),
        (
            "too slow",
            Reply {
                delay: Duration::from_secs(2),
                ..Reply::json(200, json!({}))
            },
        ),
    ];
    for (case, reply) in cases {
        app.on_connect(move |_| reply.clone());
        let refused = handshake_with(server.addr, "/ws/chat/lobby/", &[("Cookie", &alice)]).await;
        assert_eq!(refused.status, 503, "{case}: {refused:?}");
        assert!(
            refused.json()["error"]
                .as_str()
                .unwrap()
                .starts_with("sign-in unavailable"),
            "{case}"
        );
    }
    // An answer over 64 KiB is not read through.
    let huge = "x".repeat(70_000);
    app.on_connect(move |_| Reply::json(200, json!({"user": {"id": "1", "name": huge}})));
    let refused = handshake_with(server.addr, "/ws/chat/lobby/", &[("Cookie", &alice)]).await;
    assert_eq!(refused.status, 503);
    let metrics = server.http("GET", "/metrics", None).await.body;
    assert!(
        metrics.contains(r#"livechat_hook_calls_total{hook="connect",outcome="failed"} 6"#),
        "{metrics}"
    );
    assert!(server.logged(&["a hook call failed", "hook=\"connect\"", "it answered 500"]));
    // The app unreachable.
    let gone = Server::start(&["--connect-hook", "http://127.0.0.1:9/connect"]).await;
    let refused = handshake_with(gone.addr, "/ws/chat/lobby/", &[("Cookie", &alice)]).await;
    assert_eq!(refused.status, 503);
}

/// A token (auth on) or the server key is checked without the hook.
#[tokio::test]
async fn tokens_and_the_server_key_do_not_ask_the_hook() {
    let (app, addr) = App::start().await;
    let secret = "hooks-e2e-secret-of-a-decent-length!";
    let server = with_hooks(
        addr,
        &[
            "--auth",
            "required",
            "--jwt-secret",
            secret,
            "--api-key",
            "the-key",
        ],
    )
    .await;
    let token =
        livechat::auth::issue(secret, &livechat::auth::TokenRequest::for_user("carol")).unwrap();
    let mut client = server
        .connect(&format!("/ws/chat/lobby/?meta=1&token={token}"))
        .await;
    client.send_json(json!({"message": "with a token"})).await;
    assert_eq!(client.recv().await["user"]["id"], "carol");
    let read = server.get_as("the-key", "/chat/history/?room=lobby").await;
    assert_eq!(read.status, 200);
    assert_eq!(app.connect_calls.load(Ordering::SeqCst), 0);
    // A bad token is refused locally, not handed to the app.
    let bad = handshake_with(server.addr, "/ws/chat/lobby/?token=garbage", &[]).await;
    assert_eq!(bad.status, 401);
    assert_eq!(app.connect_calls.load(Ordering::SeqCst), 0);
}

/// 300 handshakes at once with one cookie make one call; the answer is reused for the cache's
/// time, then asked again.
#[tokio::test]
async fn a_handshake_storm_makes_a_handful_of_calls() {
    let (app, addr) = App::start().await;
    app.on_connect(|call| Reply {
        delay: Duration::from_millis(200),
        ..default_connect(call)
    });
    let server = with_hooks(addr, &["--hook-cache", "2s"]).await;
    let alice = cookie("alice");
    let url = server.ws_url("/ws/chat/lobby/");
    let storm = (0..300).map(|_| {
        let (alice, url) = (alice.clone(), url.clone());
        tokio::spawn(async move {
            let (socket, _) = tokio_websockets::ClientBuilder::new()
                .uri(&url)
                .unwrap()
                .add_header("cookie".parse().unwrap(), alice.parse().unwrap())
                .unwrap()
                .connect()
                .await
                .expect("admitted");
            socket
        })
    });
    let sockets = futures_util::future::join_all(storm).await;
    assert!(sockets.iter().all(Result::is_ok));
    let calls = app.connect_calls.load(Ordering::SeqCst);
    assert!(calls <= 2, "{calls} calls for 300 handshakes");
    let metrics = server.http("GET", "/metrics", None).await.body;
    assert!(metrics.contains(r#"livechat_hook_calls_total{hook="connect",outcome="reused"}"#));
    // Past the cache's time, the app is asked again.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    server
        .connect_with("/ws/chat/lobby/", &[("Cookie", &alice)])
        .await
        .unwrap();
    assert_eq!(app.connect_calls.load(Ordering::SeqCst), calls + 1);
}

/// A user disconnected by the server API is judged afresh when they come back: the answer the
/// app gave before is not reused, however long the cache keeps answers.
#[tokio::test]
async fn a_disconnected_user_is_asked_about_again() {
    let (app, addr) = App::start().await;
    let server = with_hooks(addr, &["--hook-cache", "1h", "--api-key", "hooks-e2e-key"]).await;
    let alice = cookie("alice");
    let mut client = server
        .connect_with("/ws/chat/lobby/", &[("Cookie", &alice)])
        .await
        .unwrap();
    server
        .connect_with("/ws/chat/lobby/", &[("Cookie", &alice)])
        .await
        .unwrap();
    assert_eq!(
        app.connect_calls.load(Ordering::SeqCst),
        1,
        "the answer is kept"
    );
    app.on_connect(|_| Reply::json(401, json!({"error": "account closed"})));
    let order = json!({"user": "1", "reason": "account closed", "reconnect": false});
    let answer = server
        .call("hooks-e2e-key", "POST", "/api/disconnect", Some(order))
        .await;
    assert_eq!(answer.status, 202, "{answer:?}");
    assert_eq!(
        client.recv_close().await,
        (4004, "disconnected: account closed".to_owned())
    );
    let again = handshake_with(server.addr, "/ws/chat/lobby/", &[("Cookie", &alice)]).await;
    assert_eq!(
        (again.status, again.json()),
        (401, json!({"error": "account closed"}))
    );
    assert_eq!(app.connect_calls.load(Ordering::SeqCst), 2);
}

/// With `expires_in`, the connection is asked about again before it runs out; refused then, it
/// closes with 4001.
#[tokio::test]
async fn an_admission_that_runs_out_is_asked_again() {
    let (app, addr) = App::start().await;
    app.on_connect(|_| {
        Reply::json(
            200,
            json!({"user": {"id": "1", "name": "alice"}, "expires_in": 2}),
        )
    });
    let server = with_hooks(addr, &["--hook-cache", "0"]).await;
    let alice = cookie("alice");
    let mut client = server
        .connect_with("/ws/chat/lobby/", &[("Cookie", &alice)])
        .await
        .unwrap();
    // Asked again (at 80% of 2 s, rounded to whole seconds) and extended: still open past 2 s.
    crate::support::eventually("asked again", || async {
        app.connect_calls.load(Ordering::SeqCst) >= 2
    })
    .await;
    app.on_connect(|_| Reply::json(401, json!({"error": "logged out"})));
    client.send_json(json!({"message": "still here"})).await;
    assert_eq!(client.recv().await, json!({"message": "still here"}));
    assert_eq!(
        client.recv_close().await,
        (4001, "token expired".to_owned())
    );
}

/// The publish hook accepts, rewrites and refuses; a sender's messages keep their order whatever
/// the hook's latency.
#[tokio::test]
async fn the_publish_hook_judges_messages_in_order() {
    let (app, addr) = App::start().await;
    app.on_publish(|call| {
        let text = call["message"].as_str().unwrap_or_default().to_owned();
        // Later messages answered sooner: the order must hold anyway.
        let n: u64 = text.trim().trim_start_matches('m').parse().unwrap_or(0);
        let delay = Duration::from_millis(40u64.saturating_sub(n));
        if text.contains("forbidden") {
            return Reply {
                delay,
                ..Reply::json(403, json!({"error": "that word is not welcome here"}))
            };
        }
        let reply = match text.trim() != text {
            true => Reply::json(200, json!({"message": text.trim()})),
            false => Reply::json(200, json!({})),
        };
        Reply { delay, ..reply }
    });
    let server = with_hooks(addr, &[]).await;
    let alice = cookie("alice");
    let mut client = server
        .connect_with("/ws/chat/lobby/?meta=1", &[("Cookie", &alice)])
        .await
        .unwrap();
    for n in 0..40 {
        client
            .send_json(json!({"message": format!("  m{n}  "), "nonce": format!("n{n}")}))
            .await;
    }
    client
        .send_json(json!({"message": "a forbidden word", "nonce": "bad-1"}))
        .await;
    // The refusal is sent when it is judged, which may be before earlier messages are echoed.
    let (mut seen, mut refused) = (Vec::new(), None);
    while seen.len() < 40 || refused.is_none() {
        let frame = client.recv().await;
        match frame.get("error") {
            Some(_) => refused = Some(frame),
            None => seen.push(frame["message"].as_str().unwrap().to_owned()),
        }
    }
    let refused = refused.unwrap();
    assert_eq!(
        seen,
        (0..40).map(|n| format!("m{n}")).collect::<Vec<_>>(),
        "in order, trimmed"
    );
    assert_eq!(
        refused,
        json!({"error": "that word is not welcome here", "for": "message", "nonce": "bad-1"})
    );
    let call = app.call_with_nonce("publish", "bad-1");
    assert_eq!(call["user"], json!({"id": "1", "name": "alice"}));
    assert_eq!(
        (&call["room"], &call["nonce"]),
        (&json!("lobby"), &json!("bad-1"))
    );
    // Over HTTP: the same words, 403.
    let body = br#"{"message": "forbidden over http", "room": "lobby"}"#;
    let refused = http(
        server.addr,
        "POST",
        "/chat/send/",
        Some(body),
        &[("Cookie", &alice)],
    )
    .await;
    assert_eq!(
        (refused.status, refused.json()),
        (403, json!({"error": "that word is not welcome here"}))
    );
    let stored = http(
        server.addr,
        "GET",
        "/chat/history/?room=lobby&limit=100",
        None,
        &[("Cookie", &alice)],
    )
    .await;
    let stored = stored.json()["chat_history"].as_array().unwrap().len();
    assert_eq!(stored, 40, "nothing refused was stored");
}

/// When the publish hook fails: refused by default (with a clear error, 503 over HTTP), stored
/// as sent with `accept`. The server key's messages are not judged.
#[tokio::test]
async fn a_failing_publish_hook_rejects_unless_told_to_accept() {
    let (app, addr) = App::start().await;
    app.on_publish(|_| Reply::json(500, json!({"error": "down"})));
    let alice = cookie("alice");
    let rejecting = with_hooks(addr, &["--api-key", "the-key"]).await;
    let mut client = rejecting
        .connect_with("/ws/chat/lobby/", &[("Cookie", &alice)])
        .await
        .unwrap();
    client
        .send_json(json!({"message": "lost?", "nonce": "n1"}))
        .await;
    let refused = client.recv().await;
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .starts_with("message refused: the publish hook failed"),
        "{refused}"
    );
    assert_eq!(refused["nonce"], "n1");
    let body = br#"{"message": "over http"}"#;
    let failed = http(
        rejecting.addr,
        "POST",
        "/chat/send/",
        Some(body),
        &[("Cookie", &alice)],
    )
    .await;
    assert_eq!(failed.status, 503, "{failed:?}");
    let key = http(
        rejecting.addr,
        "POST",
        "/chat/send/",
        Some(body),
        &[("Authorization", "Bearer the-key")],
    )
    .await;
    assert_eq!(key.status, 200, "the server key is not judged");
    let calls = app.publish_calls.load(Ordering::SeqCst);
    assert_eq!(calls, 2);

    let accepting = with_hooks(addr, &["--publish-hook-failure", "accept"]).await;
    let mut client = accepting
        .connect_with("/ws/chat/lobby/", &[("Cookie", &alice)])
        .await
        .unwrap();
    client.send_json(json!({"message": "stored anyway"})).await;
    assert_eq!(client.recv().await, json!({"message": "stored anyway"}));
    let metrics = accepting.http("GET", "/metrics", None).await.body;
    assert!(metrics.contains(r#"livechat_hook_calls_total{hook="publish",outcome="failed"} 1"#));
}
