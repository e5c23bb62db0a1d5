//! permessage-deflate over a real TCP connection: a client doing the handshake and the framing
//! by hand (RFC 6455 and 7692), zlib from flate2 on the client side. A room frame is compressed
//! once for all the members that agreed to it (the server's counter says so), plain members get
//! the plain frame, client messages may come compressed, and a zip bomb is closed 1009.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{PATIENCE, Server, eventually, read_head};

const FIN: u8 = 0x80;
const RSV1: u8 = 0x40;
const TEXT: u8 = 0x1;
const CONTINUATION: u8 = 0x0;
const CLOSE: u8 = 0x8;
const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

/// What browsers offer.
const BROWSER_OFFER: &str = "permessage-deflate; client_max_window_bits";

struct RawClient {
    tcp: TcpStream,
    /// The server's `Sec-WebSocket-Extensions` answer, if it gave one.
    extensions: Option<String>,
}

impl RawClient {
    async fn connect(server: &Server, room: &str, offer: Option<&str>) -> RawClient {
        let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
        let offer = offer
            .map(|offer| format!("Sec-WebSocket-Extensions: {offer}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "GET /ws/chat/{room}/ HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n{offer}\r\n"
        );
        tcp.write_all(request.as_bytes()).await.expect("handshake");
        let head = read_head(&mut tcp).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let extensions = head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-extensions")
                .then(|| value.trim().to_owned())
        });
        RawClient { tcp, extensions }
    }

    /// The next frame from the server: its first byte and payload.
    async fn frame(&mut self) -> (u8, Vec<u8>) {
        tokio::time::timeout(PATIENCE, async {
            let first = self.tcp.read_u8().await.expect("a frame");
            let len = match self.tcp.read_u8().await.expect("a length") {
                126 => u64::from(self.tcp.read_u16().await.expect("length")),
                127 => self.tcp.read_u64().await.expect("length"),
                len => u64::from(len),
            };
            let mut payload = vec![0; len as usize];
            self.tcp.read_exact(&mut payload).await.expect("payload");
            (first, payload)
        })
        .await
        .expect("a frame in time")
    }

    /// The next message frame, as JSON, and whether it came compressed.
    async fn message(&mut self) -> (Value, bool) {
        let (first, payload) = self.frame().await;
        assert_eq!(first & 0x0F, TEXT, "a text frame, got {first:#x}");
        let compressed = first & RSV1 != 0;
        let text = if compressed {
            inflate(&payload)
        } else {
            payload
        };
        (serde_json::from_slice(&text).expect("JSON"), compressed)
    }

    async fn send(&mut self, first: u8, payload: &[u8]) {
        let key = [0x12, 0x34, 0x56, 0x78];
        let mut frame = vec![first];
        match payload.len() {
            len if len < 126 => frame.push(0x80 | len as u8),
            len if len <= 0xFFFF => {
                frame.push(0x80 | 126);
                frame.extend((len as u16).to_be_bytes());
            }
            len => {
                frame.push(0x80 | 127);
                frame.extend((len as u64).to_be_bytes());
            }
        }
        frame.extend(key);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        self.tcp.write_all(&frame).await.expect("send");
    }

    /// Reads frames until the close frame; its status code.
    async fn close_code(&mut self) -> u16 {
        loop {
            let (first, payload) = self.frame().await;
            if first & 0x0F == CLOSE {
                return u16::from_be_bytes([payload[0], payload[1]]);
            }
        }
    }
}

fn deflate(payload: &[u8]) -> Vec<u8> {
    let mut compressor = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(payload.len() + 1024);
    compressor
        .compress_vec(payload, &mut out, FlushCompress::Sync)
        .expect("compress");
    assert!(out.ends_with(&TAIL));
    out.truncate(out.len() - TAIL.len());
    out
}

fn inflate(payload: &[u8]) -> Vec<u8> {
    let mut inflater = Decompress::new(false);
    let mut input = payload.to_vec();
    input.extend(TAIL);
    let mut out = Vec::with_capacity(1 << 20);
    inflater
        .decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .expect("valid deflate data");
    out
}

async fn frames_compressed(server: &Server) -> f64 {
    let scrape = server.http("GET", "/metrics", None).await.body;
    scrape
        .lines()
        .find_map(|line| {
            line.strip_prefix("livechat_frames_compressed_total ")?
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_room_frame_is_compressed_once_for_every_member_that_agreed() {
    let server = Server::start(&[]).await;
    let mut compressed = Vec::new();
    for _ in 0..3 {
        let client = RawClient::connect(&server, "squeezed", Some(BROWSER_OFFER)).await;
        assert_eq!(
            client.extensions.as_deref(),
            Some(
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
                 client_max_window_bits=15"
            )
        );
        compressed.push(client);
    }
    let mut plain = RawClient::connect(&server, "squeezed", None).await;
    assert_eq!(plain.extensions, None);
    let before = frames_compressed(&server).await;

    let long = "a chat message long enough to be worth compressing. ".repeat(6);
    server.post_message("squeezed", json!(long)).await;
    for client in &mut compressed {
        assert_eq!(client.message().await, (json!({ "message": long }), true));
    }
    assert_eq!(plain.message().await, (json!({ "message": long }), false));
    eventually("one compression for three members", || async {
        frames_compressed(&server).await == before + 1.0
    })
    .await;

    // Under LIVECHAT_COMPRESS_MIN_BYTES (256): plain for everyone, nothing compressed.
    server.post_message("squeezed", json!("short")).await;
    for client in &mut compressed {
        assert_eq!(
            client.message().await,
            (json!({ "message": "short" }), false)
        );
    }
    assert_eq!(frames_compressed(&server).await, before + 1.0);
}

#[tokio::test]
async fn compressed_client_messages_are_inflated_and_a_zip_bomb_is_closed_1009() {
    let server = Server::start(&["--max-message-bytes", "65536"]).await;
    let mut sender = RawClient::connect(&server, "inflated", Some(BROWSER_OFFER)).await;
    let mut reader = server.join("inflated").await;
    let long = "compressed by the client, ".repeat(20);
    let body = json!({ "message": long }).to_string();
    sender
        .send(FIN | RSV1 | TEXT, &deflate(body.as_bytes()))
        .await;
    assert_eq!(reader.recv().await, json!({ "message": long }));
    // Fragmented: RSV1 on the first frame only.
    let compressed = deflate(json!({ "message": "in two parts" }).to_string().as_bytes());
    let (head, tail) = compressed.split_at(compressed.len() / 2);
    sender.send(RSV1 | TEXT, head).await;
    sender.send(FIN | CONTINUATION, tail).await;
    assert_eq!(reader.recv().await, json!({ "message": "in two parts" }));
    // 16 MiB of one character in a few kilobytes: refused at the 64 KiB limit.
    let bomb = deflate(&vec![b'a'; 16 << 20]);
    assert!(bomb.len() < 65536, "{}", bomb.len());
    sender.send(FIN | RSV1 | TEXT, &bomb).await;
    assert_eq!(sender.close_code().await, 1009);
}

#[tokio::test]
async fn offers_it_cannot_honour_and_compression_off_agree_to_nothing() {
    let server = Server::start(&[]).await;
    // A window of 8 bits asked of the server (zlib cannot make one): the next offer is taken.
    let fallback = RawClient::connect(
        &server,
        "offers",
        Some("permessage-deflate; server_max_window_bits=8, permessage-deflate; server_max_window_bits=10"),
    )
    .await;
    assert_eq!(
        fallback.extensions.as_deref(),
        Some(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=10"
        )
    );
    let mut declined = RawClient::connect(
        &server,
        "offers",
        Some("permessage-deflate; server_max_window_bits=8"),
    )
    .await;
    assert_eq!(declined.extensions, None);
    let long = "x".repeat(400);
    server.post_message("offers", json!(long)).await;
    assert_eq!(
        declined.message().await,
        (json!({ "message": long }), false)
    );

    let off = Server::start(&["--compression", "off"]).await;
    let mut client = RawClient::connect(&off, "offers", Some(BROWSER_OFFER)).await;
    assert_eq!(client.extensions, None);
    // Without the extension, RSV1 is a protocol error.
    client.send(FIN | RSV1 | TEXT, &deflate(b"{}")).await;
    assert_eq!(client.close_code().await, 1002);
}
