//! The server's edge: connection caps, client addresses behind proxies, requests that never
//! finish, and the open-file limit.

use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::support::{PATIENCE, Server};

/// A raw WebSocket handshake from `source`; the answer's status and the open connection.
async fn upgrade_from(
    server: SocketAddr,
    source: &str,
    headers: &[(&str, &str)],
) -> (u16, TcpStream) {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(source.parse::<IpAddr>().unwrap(), 0))
        .expect("bind the source address");
    let mut stream = socket.connect(server).await.expect("connect");
    let mut request = format!(
        "GET /ws/chat/capped/ HTTP/1.1\r\nHost: {server}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let read = tokio::time::timeout(PATIENCE, stream.read(&mut byte))
            .await
            .expect("an answer in time")
            .expect("read");
        assert_eq!(read, 1, "connection closed before the answer ended");
        head.push(byte[0]);
    }
    let status = std::str::from_utf8(&head[9..12]).unwrap().parse().unwrap();
    (status, stream)
}

/// Reads until the server closes the connection; what it sent.
async fn until_closed(stream: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut seen))
        .await
        .expect("the server closes the connection")
        .ok();
    String::from_utf8_lossy(&seen).into_owned()
}

#[tokio::test]
async fn at_the_connection_cap_handshakes_get_503_and_health_checks_still_answer() {
    let server = Server::start(&["--max-connections", "5"]).await;
    let mut held = Vec::new();
    for _ in 0..5 {
        let (status, stream) = upgrade_from(server.addr, "127.0.0.1", &[]).await;
        assert_eq!(status, 101);
        held.push(stream);
    }
    let (status, _) = upgrade_from(server.addr, "127.0.0.1", &[]).await;
    assert_eq!(status, 503);
    assert_eq!(server.http("GET", "/healthz", None).await.status, 200);
    // A place frees up when a connection ends.
    drop(held.pop());
    crate::support::eventually("a place frees up", || async {
        upgrade_from(server.addr, "127.0.0.1", &[]).await.0 == 101
    })
    .await;
}

#[tokio::test]
async fn the_per_address_cap_counts_each_client_apart() {
    let server = Server::start(&["--max-connections-per-ip", "2"]).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let (status, stream) = upgrade_from(server.addr, "127.0.0.1", &[]).await;
        assert_eq!(status, 101);
        held.push(stream);
    }
    assert_eq!(upgrade_from(server.addr, "127.0.0.1", &[]).await.0, 503);
    assert_eq!(upgrade_from(server.addr, "127.0.0.2", &[]).await.0, 101);
}

#[tokio::test]
async fn forwarded_addresses_count_only_from_trusted_proxies() {
    let trusting = Server::start(&[
        "--max-connections-per-ip",
        "1",
        "--trusted-proxies",
        "127.0.0.1/32",
    ])
    .await;
    let from = |client: &'static str| [("X-Forwarded-For", client)];
    let (first, _a) = upgrade_from(trusting.addr, "127.0.0.1", &from("203.0.113.1")).await;
    let (second, _b) = upgrade_from(trusting.addr, "127.0.0.1", &from("203.0.113.2")).await;
    let (again, _c) = upgrade_from(trusting.addr, "127.0.0.1", &from("203.0.113.2")).await;
    assert_eq!((first, second, again), (101, 101, 503));
    // From an untrusted peer the header is ignored: both count as 127.0.0.2.
    let (first, _d) = upgrade_from(trusting.addr, "127.0.0.2", &from("203.0.113.3")).await;
    let (second, _e) = upgrade_from(trusting.addr, "127.0.0.2", &from("203.0.113.4")).await;
    assert_eq!((first, second), (101, 503));
}

#[tokio::test]
async fn requests_that_never_finish_are_dropped_after_the_request_timeout() {
    let server = Server::start(&["--request-timeout", "1s"]).await;
    let mut halves = Vec::new();
    for _ in 0..50 {
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        stream.write_all(b"GET /heal").await.expect("write");
        halves.push(stream);
    }
    for mut stream in halves {
        until_closed(&mut stream).await;
    }
    // A body that stops short of its length.
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    let head = "POST /chat/send/ HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"message\":";
    stream.write_all(head.as_bytes()).await.expect("write");
    let answer = until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(server.history("?room=lobby").await.is_empty());
}

#[tokio::test]
async fn at_a_low_open_file_limit_health_checks_still_answer() {
    let server = Server::start_with_file_limit(256, &[]).await;
    let mut held = Vec::new();
    let mut refused = false;
    for _ in 0..300 {
        let (status, stream) = upgrade_from(server.addr, "127.0.0.1", &[]).await;
        if status == 503 {
            refused = true;
            break;
        }
        assert_eq!(status, 101);
        held.push(stream);
    }
    assert!(refused, "the cap stays below the open-file limit");
    assert!(held.len() > 64, "{} connections", held.len());
    for _ in 0..20 {
        assert_eq!(server.http("GET", "/healthz", None).await.status, 200);
    }
    let open_files = std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
        .expect("fd list")
        .count();
    assert!(open_files < 256, "{open_files} files open");
}
