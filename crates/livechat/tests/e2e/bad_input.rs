//! CONTRACT section 3, single node: bad input gets a clear answer and nothing is stored.

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_websockets::Message;

use crate::support::{Event, PATIENCE, Server, http, read_head};

#[tokio::test]
async fn bad_frames_get_an_error_frame_to_the_sender_only_and_the_connection_stays_open() {
    let server = Server::start(&[]).await;
    let mut sender = server.join("strict").await;
    let mut peer = server.join("strict").await;
    // Each error says which kind of request it answers.
    for (bad, answers) in [
        ("not json", "frame"),
        ("{\"message\": ", "frame"),
        ("[1, 2]", "frame"),
        ("\"just a string\"", "frame"),
        ("42", "frame"),
        ("{}", "message"),
        ("{\"msg\": 1}", "message"),
        ("{\"message\": 1, \"nonce\": 5}", "message"),
    ] {
        sender.send_text(bad).await;
        let frame = sender.recv().await;
        let error = frame["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{bad}: {frame}"));
        assert!(!error.is_empty());
        assert_eq!(frame["for"], answers, "{bad}: {frame}");
        assert_eq!(
            frame.as_object().unwrap().len(),
            2,
            "only the error and what it answers: {frame}"
        );
    }
    peer.expect_silence().await;
    assert!(
        server.history("?room=strict").await.is_empty(),
        "nothing stored"
    );
    sender.send_json(json!({"message": "still here"})).await;
    assert_eq!(sender.recv().await, json!({"message": "still here"}));
    assert_eq!(peer.recv().await, json!({"message": "still here"}));
}

#[tokio::test]
async fn binary_frames_get_an_error_frame() {
    let server = Server::start(&[]).await;
    let mut client = server.join("bin").await;
    client
        .send_raw(Message::binary(b"{\"message\": 1}".to_vec()))
        .await;
    let frame = client.recv().await;
    assert!(
        frame["error"].as_str().unwrap().contains("binary"),
        "{frame}"
    );
    assert_eq!(frame["for"], "frame");
    client.send_json(json!({"message": 1})).await;
    assert_eq!(client.recv().await, json!({"message": 1}));
}

#[tokio::test]
async fn frames_over_the_limit_close_with_1009() {
    let server = Server::start(&[]).await;
    let mut client = server.join("limit").await;
    let too_big = format!("{{\"message\": \"{}\"}}", "x".repeat(1024 * 1024));
    client.send_text(&too_big).await;
    assert_eq!(client.recv_close().await.0, 1009);

    let small = Server::start(&["--max-message-bytes", "100"]).await;
    let mut client = small.join("limit").await;
    client.send_json(json!({"message": "fits"})).await;
    assert_eq!(client.recv().await, json!({"message": "fits"}));
    client.send_json(json!({"message": "x".repeat(100)})).await;
    assert_eq!(client.recv_close().await.0, 1009);
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007() {
    let server = Server::start(&[]).await;
    let mut client = server.join("utf8").await;
    client
        .send_text_bytes(b"{\"message\": \"\xff\xfe\"}".to_vec())
        .await;
    assert_eq!(client.recv_close().await.0, 1007);
}

#[tokio::test]
async fn http_errors_are_json_with_the_right_status() {
    let server = Server::start(&["--max-message-bytes", "1000"]).await;
    let cases: [(&str, &str, Option<&str>, u16); 9] = [
        ("POST", "/chat/send/", Some("{not json"), 400),
        ("POST", "/chat/send/", Some(""), 400),
        ("POST", "/chat/send/", Some("[1]"), 400),
        ("POST", "/chat/send/", Some(r#"{"msg": "x"}"#), 400),
        (
            "POST",
            "/chat/send/",
            Some(r#"{"message": "x", "room": "bad room"}"#),
            400,
        ),
        ("GET", "/chat/send/", None, 405),
        ("DELETE", "/chat/send/", None, 405),
        ("POST", "/chat/history/", Some("{}"), 405),
        ("GET", "/ws/chat/plain_get/", None, 426),
    ];
    for (method, path, body, status) in cases {
        let answer = server.http(method, path, body).await;
        assert_eq!(
            answer.status, status,
            "{method} {path} {body:?}: {answer:?}"
        );
        assert!(answer.json()["error"].is_string(), "{answer:?}");
        assert!(
            answer
                .headers
                .to_ascii_lowercase()
                .contains("application/json")
        );
    }
    let big = format!(r#"{{"message": "{}"}}"#, "x".repeat(2000));
    let answer = http(
        server.addr,
        "POST",
        "/chat/send/",
        Some(big.as_bytes()),
        &[],
    )
    .await;
    assert_eq!(answer.status, 413, "{answer:?}");
    assert!(answer.json()["error"].is_string());
    assert!(server.history("").await.is_empty(), "nothing stored");
}

#[tokio::test]
async fn close_from_the_client_is_answered() {
    let server = Server::start(&[]).await;
    let mut client = server.join("bye").await;
    client
        .send_raw(Message::close(
            Some(tokio_websockets::CloseCode::NORMAL_CLOSURE),
            "bye",
        ))
        .await;
    match client.next_event().await {
        Event::Closed(code, _) => assert_eq!(code, 1000),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_ping_is_answered_with_a_pong() {
    let server = Server::start(&[]).await;
    let mut client = server.join("pings").await;
    let pong = client.ping("are you there").await;
    assert!(pong.is_pong(), "{pong:?}");
    assert_eq!(&*pong.into_payload(), b"are you there");
}

#[tokio::test]
async fn a_frame_that_breaks_the_rfc_closes_with_1002() {
    let server = Server::start(&[]).await;
    let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
    tcp.write_all(
        b"GET /ws/chat/raw/ HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .expect("handshake sent");
    let head = read_head(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // A text frame without a mask: clients must mask every frame (RFC 6455 section 5.1).
    tcp.write_all(b"\x81\x01x").await.expect("frame sent");
    let mut close = [0u8; 4];
    tokio::time::timeout(PATIENCE, tcp.read_exact(&mut close))
        .await
        .expect("the close frame in time")
        .expect("the close frame");
    assert_eq!(close[0], 0x88, "a close frame");
    assert_eq!(u16::from_be_bytes([close[2], close[3]]), 1002);
}
