//! The accept loop: HTTP/1.1 on every accepted TCP connection (hyper), with upgrades for
//! WebSockets, over TLS when an acceptor is given. Each connection gets `TCP_NODELAY` and its peer
//! address; a TLS handshake, or request headers, not done within the request timeout is dropped. At the process's open-file limit
//! a pending connection is still answered (503) and closed, with a warning, instead of waiting
//! unseen. On shutdown it stops accepting and lets requests in progress finish.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::throttle::Throttle;

/// What a connection that arrives while no file is left gets, before it is closed.
const NO_FILES_LEFT: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
Content-Length: 53\r\nConnection: close\r\n\r\n{\"error\": \"server at its open-file limit; try later\"}";

static ACCEPT_WARNINGS: Throttle = Throttle::new(Duration::from_secs(60), 1);

/// Serves `app` on `listener` (over TLS with `tls`) until `shutdown`, then waits for requests in
/// progress.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    request_timeout: Duration,
    shutdown: CancellationToken,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(request_timeout);
    let requests = TaskTracker::new();
    // One file held back for the moment the process has no other: closing it lets the loop
    // accept the waiting connection and tell it so.
    let mut spare = std::fs::File::open("/dev/null").ok();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) if out_of_files(&error) => {
                refuse_one(&listener, &mut spare).await;
                continue;
            }
            Err(error) => {
                tracing::debug!(%error, "accept failed");
                continue;
            }
        };
        if let Err(error) = stream.set_nodelay(true) {
            // Without it, Nagle holds small writes until the client's delayed ACK (up to 40 ms).
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        let (app, builder, closing, tls) =
            (app.clone(), builder.clone(), shutdown.clone(), tls.clone());
        requests.spawn(async move {
            let ended = match tls {
                None => serve_connection(stream, peer, app, &builder, closing).await,
                Some(tls) => {
                    match tokio::time::timeout(request_timeout, tls.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            serve_connection(stream, peer, app, &builder, closing).await
                        }
                        Ok(Err(error)) => Err(format!("TLS handshake failed: {error}")),
                        Err(_) => Err("TLS handshake timed out".to_owned()),
                    }
                }
            };
            if let Err(error) = ended {
                tracing::debug!(%peer, %error, "HTTP connection ended");
            }
        });
    }
    drop(listener);
    requests.close();
    requests.wait().await;
}

/// HTTP/1.1 on one connection until it ends, is upgraded, or (on shutdown) has finished the
/// request in progress.
async fn serve_connection<Io>(
    io: Io,
    peer: SocketAddr,
    app: Router,
    builder: &http1::Builder,
    closing: CancellationToken,
) -> Result<(), String>
where
    Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = app.map_request(move |request: axum::http::Request<Incoming>| {
        let mut request = request.map(axum::body::Body::new);
        request
            .extensions_mut()
            .insert(ConnectInfo::<SocketAddr>(peer));
        request
    });
    let connection = builder
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
        .with_upgrades();
    let mut connection = std::pin::pin!(connection);
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        () = closing.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    ended.map_err(|error| error.to_string())
}

fn out_of_files(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// Frees the spare file, accepts the waiting connection, answers 503 and closes it.
async fn refuse_one(listener: &TcpListener, spare: &mut Option<std::fs::File>) {
    if let Some(held_back) = ACCEPT_WARNINGS.allow() {
        tracing::warn!(
            refused_since_last_warning = held_back,
            "no file descriptors left: answering new connections with 503 (raise the open-file \
             limit, or lower LIVECHAT_MAX_CONNECTIONS)"
        );
    }
    if spare.take().is_none() {
        // No spare to give back either: wait for files to free up.
        tokio::time::sleep(Duration::from_millis(100)).await;
    } else if let Ok(Ok((stream, _))) =
        tokio::time::timeout(Duration::from_millis(10), listener.accept()).await
    {
        answer_and_close(stream);
    }
    *spare = std::fs::File::open("/dev/null").ok();
}

fn answer_and_close(stream: TcpStream) {
    // Best effort: the answer fits in an empty socket buffer.
    let _ = stream.try_write(NO_FILES_LEFT);
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_refusal_is_a_complete_answer() {
        let text = std::str::from_utf8(super::NO_FILES_LEFT).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }
}
