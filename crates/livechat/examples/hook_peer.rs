//! A stand-in for the app's publish and connect hooks, for measuring what a hook costs: it
//! answers `POST /publish` with `{}` and `POST /connect` with one user, each after a fixed delay
//! (default 1 ms). Not part of the product. Usage: `hook_peer 127.0.0.1:9100 [DELAY_MS]`.

use std::time::Duration;

use axum::Router;
use axum::routing::post;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let address = args.next().unwrap_or_else(|| "127.0.0.1:9100".into());
    let delay = Duration::from_millis(args.next().and_then(|ms| ms.parse().ok()).unwrap_or(1));
    let answer = move |body: &'static str| async move {
        tokio::time::sleep(delay).await;
        ([("content-type", "application/json")], body)
    };
    let app = Router::new()
        .route("/publish", post(move || answer("{}")))
        .route(
            "/connect",
            post(move || answer(r#"{"user": {"id": "1", "name": "bench"}}"#)),
        );
    let listener = tokio::net::TcpListener::bind(&address).await?;
    eprintln!(
        "hooks on http://{} ({delay:?} per answer)",
        listener.local_addr()?
    );
    axum::serve(listener, app).await
}
