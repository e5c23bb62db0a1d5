//! The chat page: `/` (pick a room) and `/r/{room}` (chat in it), one HTML file with its script
//! (ES modules: `app.js` imports the others) and style sheet, embedded in the binary. Page routes stay out of the API's way, so rooms named
//! `send`, `history` or `rooms` work in the page too. The HTML tells the script this server's
//! message size limit (`<meta name="livechat-max-message-bytes">`), so that the page can check it
//! before sending, and whether history can be read (`<meta name="livechat-history">`: `open`,
//! `api-key` or `off`), so that it follows rooms live only when it cannot.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::AppState;
use crate::auth::Access;

const INDEX: &str = include_str!("../../web/index.html");
const SCRIPT: &str = "text/javascript; charset=utf-8";

/// Everything under `/assets/`: name, content type, content.
const ASSETS: &[(&str, &str, &str)] = &[
    ("app.js", SCRIPT, include_str!("../../web/app.js")),
    ("client.js", SCRIPT, include_str!("../../web/client.js")),
    ("common.js", SCRIPT, include_str!("../../web/common.js")),
    ("composer.js", SCRIPT, include_str!("../../web/composer.js")),
    ("people.js", SCRIPT, include_str!("../../web/people.js")),
    ("rooms.js", SCRIPT, include_str!("../../web/rooms.js")),
    ("timeline.js", SCRIPT, include_str!("../../web/timeline.js")),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../web/style.css"),
    ),
];

/// Nothing but this server: no outside scripts, styles, fonts or connections.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; connect-src 'self'; img-src 'self' data:; \
     style-src 'self'; script-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/r/{room}", get(index))
        .route("/assets/{file}", get(file))
}

async fn file(Path(name): Path<String>) -> axum::response::Response {
    match ASSETS.iter().find(|(file, _, _)| *file == name) {
        Some((_, content_type, content)) => asset(content_type, *content).into_response(),
        None => super::error::ApiError::NotFound.into_response(),
    }
}

async fn index(State(state): State<AppState>) -> impl IntoResponse {
    let history = match state.history_reads {
        Access::Open => "open",
        Access::ApiKey => "api-key",
        Access::Off => "off",
    };
    let limit = format!(
        "<meta name=\"livechat-max-message-bytes\" content=\"{}\">\n\
         <meta name=\"livechat-history\" content=\"{history}\">\n</head>",
        state.max_message_bytes
    );
    asset(
        "text/html; charset=utf-8",
        INDEX.replacen("</head>", &limit, 1),
    )
}

fn asset(content_type: &'static str, body: impl Into<String>) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body.into(),
    )
}
