//! Policy that asks the app it serves (docs/hooks.md): the connect hook (who a caller without a
//! token is) and the publish hook (whether, and as what, a client's message is stored). Both
//! are optional; both fail closed unless told otherwise; every call is bounded in time, in
//! concurrency and in the bytes of its answer, logged when it fails and counted.

mod client;
mod connect;
mod publish;
pub mod signature;

use std::sync::Arc;
use std::time::Duration;

pub use client::{CallError, CallSettings, Endpoint, http_client};
pub use connect::{Admission, ConnectHook, ConnectRequest, Transport, Verdict};
pub use publish::{Judgement, OnFailure, PublishHook};

use crate::throttle::Throttle;

/// The hooks this server calls, as configured.
#[derive(Default, Clone)]
pub struct Hooks {
    pub connect: Option<Arc<ConnectHook>>,
    pub publish: Option<Arc<PublishHook>>,
}

/// A hook call that got no usable answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HookError {
    #[error("{0}")]
    Call(#[from] CallError),
    #[error("it answered {0}: {1}")]
    Status(u16, String),
    #[error("it answered {0}")]
    Nonsense(String),
    /// The call's own body could not be written as JSON (a bug): the call is not made.
    #[error(transparent)]
    Unencodable(#[from] crate::json::Unencodable),
}

/// Most characters of an app's reason passed on to a client.
const MAX_REASON_CHARS: usize = 500;

/// The `error` of a refusal's JSON body, cleaned for a client: control characters become
/// spaces, at most `MAX_REASON_CHARS`.
fn refusal_reason(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Refusal {
        error: String,
    }
    let refusal: Refusal = serde_json::from_slice(body).ok()?;
    let reason: String = refusal
        .error
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_REASON_CHARS)
        .collect();
    (!reason.trim().is_empty()).then_some(reason)
}

/// The start of an answer, for a log line.
fn preview(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Failed calls: at most 20 lines a second, each saying how many were held back.
static FAILURE_LINES: Throttle = Throttle::new(Duration::from_secs(1), 20);

fn log_failure(hook: &'static str, error: &HookError) {
    if let Some(held_back) = FAILURE_LINES.allow() {
        tracing::warn!(hook, %error, failures_without_a_line = held_back, "a hook call failed");
    }
}
