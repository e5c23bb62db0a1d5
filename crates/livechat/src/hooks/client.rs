//! Calls to the app's URLs: one pooled HTTP client (reqwest over rustls) for every hook, at most
//! `concurrency` calls in flight per endpoint (the others wait their turn within the same
//! timeout, so a storm queues instead of reaching the app), answers read up to
//! `MAX_ANSWER_BYTES`, signed when a secret is set, timed in `livechat_hook_seconds`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::sync::Semaphore;

use super::signature::{self, Signer};
use crate::metrics::{Hook, Metrics};
use crate::store::now_ms;

/// The most of an answer that is read: beyond, the call failed.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// How every endpoint is called.
#[derive(Clone)]
pub struct CallSettings {
    pub timeout: Duration,
    pub concurrency: usize,
    pub signer: Option<Signer>,
}

/// One of the app's URLs.
pub struct Endpoint {
    hook: Hook,
    url: reqwest::Url,
    client: reqwest::Client,
    permits: Semaphore,
    settings: CallSettings,
    metrics: Arc<Metrics>,
}

/// What the app answered.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

/// A call that got no usable answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot reach it: {0}")]
    Unreachable(String),
    #[error("its answer is larger than {MAX_ANSWER_BYTES} bytes")]
    TooLarge,
}

/// The HTTP client the endpoints share (its connection pool, its TLS roots).
pub fn http_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .user_agent(concat!("livechat/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .map_err(|error| error.to_string())
}

impl Endpoint {
    pub fn new(
        hook: Hook,
        url: &str,
        client: reqwest::Client,
        settings: CallSettings,
        metrics: Arc<Metrics>,
    ) -> Result<Self, String> {
        let url = reqwest::Url::parse(url)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https"))
            .ok_or_else(|| format!("`{url}` is not an http:// or https:// URL"))?;
        Ok(Self {
            hook,
            url,
            client,
            permits: Semaphore::new(settings.concurrency.max(1)),
            settings,
            metrics,
        })
    }

    pub fn timeout(&self) -> Duration {
        self.settings.timeout
    }

    /// POSTs `body` (JSON) and reads the answer, waiting for a turn and for the answer within
    /// the timeout.
    pub async fn post(&self, body: Bytes) -> Result<Answer, CallError> {
        let started = Instant::now();
        let timeout = self.settings.timeout;
        let answer = tokio::time::timeout(timeout, self.call(body))
            .await
            .unwrap_or(Err(CallError::Timeout(timeout)));
        self.metrics
            .hook_seconds(self.hook)
            .record(started.elapsed().as_secs_f64());
        answer
    }

    async fn call(&self, body: Bytes) -> Result<Answer, CallError> {
        let _turn = self
            .permits
            .acquire()
            .await
            .map_err(|_| CallError::Unreachable("shutting down".into()))?;
        let mut request = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if let Some(signer) = &self.settings.signer {
            request = request.header(signature::HEADER, signer.sign(now_ms() / 1000, &body));
        }
        let unreachable =
            |error: reqwest::Error| CallError::Unreachable(error.without_url().to_string());
        let mut response = request.body(body).send().await.map_err(unreachable)?;
        if response
            .content_length()
            .is_some_and(|length| length > MAX_ANSWER_BYTES as u64)
        {
            return Err(CallError::TooLarge);
        }
        let status = response.status().as_u16();
        let mut read = BytesMut::new();
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            if read.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(CallError::TooLarge);
            }
            read.extend_from_slice(&chunk);
        }
        Ok(Answer {
            status,
            body: read.freeze(),
        })
    }
}
