//! Server-Sent Events: a room followed as `text/event-stream`, with the WebSocket's frames, ids
//! for `Last-Event-ID`, its checks, keepalive comments, a `close` event when the server ends it,
//! and not held back by a buffering proxy.

use std::time::Duration;

use serde_json::{Value, json};

use crate::nginx::Nginx;
use crate::support::{PATIENCE, Server};

/// One event of a stream: its id, its type (absent: `message`) and its data.
#[derive(Debug, Default, Clone, PartialEq)]
struct Event {
    id: Option<String>,
    kind: Option<String>,
    data: String,
}

impl Event {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("{e}: {}", self.data))
    }
}

/// A stream's reading end: parses events and comments as a browser does.
struct Stream {
    response: reqwest::Response,
    buffer: String,
    comments: Vec<String>,
}

impl Stream {
    async fn open(url: String, headers: &[(&str, &str)]) -> Result<Stream, (u16, String)> {
        let mut request = reqwest::Client::new().get(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("the request is answered");
        let status = response.status().as_u16();
        if status != 200 {
            return Err((status, response.text().await.unwrap_or_default()));
        }
        Ok(Stream {
            response,
            buffer: String::new(),
            comments: Vec::new(),
        })
    }

    fn header(&self, name: &str) -> String {
        let value = self.response.headers().get(name);
        value
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }

    /// The next event (comments and `retry:` are kept aside); `None` when the stream ended.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = Event::default();
                let mut data = Vec::new();
                for line in block.lines() {
                    match line.split_once(": ").unwrap_or((line, "")) {
                        ("", comment) => self.comments.push(comment.to_owned()),
                        ("id", id) => event.id = Some(id.to_owned()),
                        ("event", kind) => event.kind = Some(kind.to_owned()),
                        ("data", line) => data.push(line),
                        _ => {}
                    }
                }
                if data.is_empty() {
                    continue;
                }
                event.data = data.join("\n");
                return Some(event);
            }
            let chunk = tokio::time::timeout(PATIENCE, self.response.chunk())
                .await
                .expect("an event in time")
                .expect("the stream reads");
            self.buffer
                .push_str(std::str::from_utf8(&chunk?).expect("UTF-8"));
        }
    }
}

fn url(server: &Server, path: &str) -> String {
    format!("http://{}{path}", server.addr)
}

#[tokio::test]
async fn a_stream_carries_the_rooms_messages_with_their_ids_and_resumes_from_the_last_one() {
    let server = Server::start(&[]).await;
    let mut plain = Stream::open(url(&server, "/sse/chat/news/?name=Ann"), &[])
        .await
        .unwrap();
    assert_eq!(
        plain.header("content-type"),
        "text/event-stream; charset=utf-8"
    );
    assert_eq!(plain.header("x-accel-buffering"), "no");
    assert_eq!(plain.header("cache-control"), "no-cache");
    let mut meta = Stream::open(url(&server, "/sse/chat/news/?meta=1"), &[])
        .await
        .unwrap();
    server.post_message("news", json!({"text": "one"})).await;
    // A client's own line breaks stay one event.
    server
        .http(
            "POST",
            "/chat/send/",
            Some("{\"room\": \"news\", \"message\": {\n  \"text\": \"two\"\n}}"),
        )
        .await;
    let first = plain.next().await.unwrap();
    assert_eq!(
        (first.id.as_deref(), first.kind.as_deref()),
        (Some("1"), None)
    );
    assert_eq!(first.json(), json!({"message": {"text": "one"}}));
    let second = plain.next().await.unwrap();
    assert_eq!(second.id.as_deref(), Some("2"));
    assert_eq!(second.json(), json!({"message": {"text": "two"}}));
    let with_meta = meta.next().await.unwrap();
    assert_eq!(
        (&with_meta.json()["id"], &with_meta.json()["room"]),
        (&json!(1), &json!("news"))
    );

    // What the browser sends when it reconnects: Last-Event-ID.
    let mut back = Stream::open(url(&server, "/sse/chat/news/"), &[("Last-Event-ID", "1")])
        .await
        .unwrap();
    let missed = back.next().await.unwrap();
    assert_eq!(missed.id.as_deref(), Some("2"));
    assert_eq!(missed.json(), json!({"message": {"text": "two"}}));
    assert_eq!(back.next().await.unwrap().json()["event"], "caught_up");
    let bad = Stream::open(url(&server, "/sse/chat/news/?since=x"), &[]).await;
    assert_eq!(bad.err().map(|(status, _)| status), Some(400));
}

#[tokio::test]
async fn a_stream_is_checked_as_a_websocket_is() {
    let secret = "sse-e2e-secret-of-a-decent-length";
    let server = Server::start(&["--auth", "required", "--jwt-secret", secret]).await;
    let missing = Stream::open(url(&server, "/sse/chat/private/"), &[]).await;
    assert_eq!(missing.err().map(|(status, _)| status), Some(401));
    let token = crate::support::signed_token(secret, "ann", json!({"rooms": ["private"]}));
    let elsewhere = Stream::open(
        url(&server, &format!("/sse/chat/other/?token={token}")),
        &[],
    )
    .await;
    assert_eq!(elsewhere.err().map(|(status, _)| status), Some(403));
    let foreign = Stream::open(
        url(&server, &format!("/sse/chat/private/?token={token}")),
        &[("Origin", "https://elsewhere.example")],
    )
    .await;
    assert_eq!(foreign.err().map(|(status, _)| status), Some(403));
    let mut allowed = Stream::open(
        url(
            &server,
            &format!("/sse/chat/private/?presence=1&token={token}"),
        ),
        &[],
    )
    .await
    .unwrap();
    let here = allowed.next().await.unwrap().json();
    assert_eq!(
        (&here["event"], &here["members"]),
        (&json!("presence"), &json!(1))
    );
}

#[tokio::test]
async fn quiet_streams_get_comments_and_closed_ones_a_close_event() {
    let key = "sse-e2e-server-key";
    let mut server = Server::start(&["--ping-interval", "1s", "--api-key", key]).await;
    let mut quiet = Stream::open(url(&server, "/sse/chat/quiet/?name=Bo"), &[])
        .await
        .unwrap();
    // Nothing said: a keepalive comment within the ping interval, and the stream stays.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !quiet.comments.iter().any(|comment| comment == "ping") {
        assert!(tokio::time::Instant::now() < deadline, "no keepalive");
        let chunk = tokio::time::timeout(PATIENCE, quiet.response.chunk()).await;
        let chunk = chunk.expect("a keepalive in time").unwrap().unwrap();
        quiet.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = quiet.buffer.find("\n\n") {
            let block: String = quiet.buffer.drain(..end + 2).collect();
            quiet.comments.extend(
                block
                    .lines()
                    .filter_map(|l| l.strip_prefix(": "))
                    .map(str::to_owned),
            );
        }
    }
    let order = json!({"user": "Bo", "reason": "bye"});
    let answer = server
        .call(key, "POST", "/api/disconnect", Some(order))
        .await;
    assert_eq!(answer.status, 202, "{answer:?}");
    let close = quiet.next().await.unwrap();
    assert_eq!(close.kind.as_deref(), Some("close"));
    assert_eq!(
        close.json(),
        json!({"code": 4003, "reason": "disconnected: bye"})
    );
    assert!(quiet.next().await.is_none(), "the stream ends");

    let mut open = Stream::open(url(&server, "/sse/chat/quiet/"), &[])
        .await
        .unwrap();
    server.stop().await;
    let close = open.next().await.unwrap();
    assert_eq!(
        close.json(),
        json!({"code": 1001, "reason": "server shutting down"})
    );
}

/// nginx with its default response buffering: the stream's `X-Accel-Buffering: no` keeps each
/// event from waiting in nginx's buffer.
#[tokio::test]
async fn a_buffering_proxy_does_not_hold_the_stream_back() {
    let server = Server::start(&[]).await;
    let nginx = Nginx::start_buffering(&[server.addr]).await;
    let mut stream = Stream::open(format!("http://{}/sse/chat/proxied/", nginx.addr), &[])
        .await
        .unwrap();
    server.post_message("proxied", json!("through nginx")).await;
    let event = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("the event is not held back")
        .unwrap();
    assert_eq!(event.json(), json!({"message": "through nginx"}));
}
