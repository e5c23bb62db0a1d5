//! An echo server over livechat's own WebSocket layer (the handshake, framing and socket the
//! product uses), for the Autobahn|Testsuite fuzzing client: every text and binary message comes
//! back as it was sent. Not part of the product. Usage: `ws_echo 127.0.0.1:9001`.

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
            let (response, mut pending) = upgrade.accept(MAX_MESSAGE);
            tokio::spawn(async move {
                if let Ok(socket) = std::future::poll_fn(|cx| pending.poll_ready(cx)).await {
                    echo(socket).await;
                }
            });
            response
        }
        Err(refused) => axum::response::IntoResponse::into_response(refused),
    }
}

async fn echo(mut socket: Socket) {
    socket.keep_binary();
    loop {
        let reply = match poll_fn(|cx| socket.poll_next(cx)).await {
            Ok(Some(Incoming::Text(text))) => frame::text(&[&text]),
            Ok(Some(Incoming::Binary(data))) => frame::binary(&[&data]),
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
