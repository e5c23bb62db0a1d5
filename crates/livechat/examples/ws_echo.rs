//! An echo server over livechat's own WebSocket layer (the handshake, framing and socket the
//! product uses), for the Autobahn|Testsuite fuzzing client: every text and binary message comes
//! back as it was sent, compressed when the client agreed to permessage-deflate. Not part of
//! the product. Usage: `ws_echo 127.0.0.1:9001`.

use std::future::poll_fn;
use std::time::Duration;

use axum::Router;
use axum::response::Response;
use livechat::transport::{Socket, Upgrade, serve};
use livechat::websocket::{CloseCode, Incoming, ReadError, frame};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Autobahn's largest messages are 16 MiB.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".into());
    let listener = TcpListener::bind(&address).await?;
    eprintln!("echoing on ws://{}", listener.local_addr()?);
    let app = Router::new().fallback(accept);
    serve(
        listener,
        app,
        None,
        Duration::from_secs(10),
        CancellationToken::new(),
    )
    .await;
    Ok(())
}

async fn accept(upgrade: Result<Upgrade, livechat::transport::ApiError>) -> Response {
    match upgrade {
        Ok(upgrade) => {
            let deflate = upgrade.deflate_offer();
            let (response, mut pending) = upgrade.accept(MAX_MESSAGE, deflate);
            let window = deflate.map(|agreement| agreement.server_window_bits);
            tokio::spawn(async move {
                if let Ok(socket) = std::future::poll_fn(|cx| pending.poll_ready(cx)).await {
                    echo(socket, window).await;
                }
            });
            response
        }
        Err(refused) => axum::response::IntoResponse::into_response(refused),
    }
}

/// `deflate_window`: permessage-deflate agreed, replies compressed with this window (every
/// message of at least 1 byte, as a room frame is for such a member past the minimum size).
async fn echo(mut socket: Socket, deflate_window: Option<u8>) {
    socket.keep_binary();
    let compressed = |frame| match deflate_window {
        Some(bits) => frame::deflated(&frame, bits, 1).unwrap_or(frame),
        None => frame,
    };
    loop {
        let reply = match poll_fn(|cx| socket.poll_next(cx)).await {
            Ok(Some(Incoming::Text(text))) => compressed(frame::text(&[&text])),
            Ok(Some(Incoming::Binary(data))) => compressed(frame::binary(&[&data])),
            Ok(Some(Incoming::Ping(payload))) => frame::pong(&payload),
            Ok(Some(Incoming::Pong)) => continue,
            Ok(Some(Incoming::Close(code))) => {
                socket.queue(frame::close(code.unwrap_or(CloseCode::NORMAL), ""));
                let _ = socket.finish().await;
                return;
            }
            Ok(None) | Err(ReadError::Io(_)) => return,
            Err(ReadError::Protocol(error)) => {
                socket.queue(frame::close(error.code, error.reason));
                if socket.finish().await.is_ok() {
                    let _ = poll_fn(|cx| socket.poll_discard(cx)).await;
                }
                return;
            }
        };
        socket.queue(reply);
        if poll_fn(|cx| socket.poll_write(cx)).await.is_err() {
            return;
        }
    }
}
