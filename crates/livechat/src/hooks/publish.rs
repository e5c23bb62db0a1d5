//! The publish hook: asks the app before a client's message is stored, and carries out its word:
//! accept it as is, store another message instead, or refuse it with the app's reason
//! (docs/hooks.md). When the app cannot answer, `on_failure` says what becomes of the message.

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use super::client::Endpoint;
use super::{HookError, refusal_reason};
use crate::message::{Author, Draft, Nonce};
use crate::metrics::{Hook, HookOutcome, Metrics};
use crate::room::RoomName;

use super::connect::Transport;

/// What becomes of a message when the publish hook fails (`LIVECHAT_PUBLISH_HOOK_FAILURE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnFailure {
    /// Refused, with an error that says the hook failed.
    Reject,
    /// Stored as sent.
    Accept,
}

pub struct PublishHook {
    endpoint: Endpoint,
    on_failure: OnFailure,
    /// Largest message the app may put in place of the client's.
    max_message_bytes: usize,
    metrics: Arc<Metrics>,
}

/// What the app decided.
#[derive(Debug)]
pub enum Judgement {
    /// Store this draft (the client's, or with the app's message in place of its own).
    Store(Draft),
    /// The app refused it (a 4xx), with its reason.
    Refused {
        reason: String,
        nonce: Option<Nonce>,
    },
    /// The app did not answer usefully and failures are rejected.
    Failed {
        error: HookError,
        nonce: Option<Nonce>,
    },
}

#[derive(Serialize)]
struct Call<'a> {
    room: &'a RoomName,
    user: Option<&'a Author>,
    message: &'a RawValue,
    nonce: Option<&'a Nonce>,
    transport: Transport,
}

impl PublishHook {
    pub fn new(
        endpoint: Endpoint,
        on_failure: OnFailure,
        max_message_bytes: usize,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            endpoint,
            on_failure,
            max_message_bytes,
            metrics,
        })
    }

    /// Asks the app about `draft`.
    pub async fn judge(self: Arc<Self>, mut draft: Draft, transport: Transport) -> Judgement {
        let call = Call {
            room: &draft.room,
            user: draft.user.as_deref(),
            message: &draft.message,
            nonce: draft.nonce.as_ref(),
            transport,
        };
        let answer = match crate::json::to_vec(&call) {
            Ok(body) => match self.endpoint.post(Bytes::from(body)).await {
                Ok(answer) => self.read_answer(answer.status, &answer.body),
                Err(error) => Err(HookError::Call(error)),
            },
            Err(error) => Err(HookError::Unencodable(error)),
        };
        match answer {
            Ok(Answer::Accept) => {
                self.metrics.hook_call(Hook::Publish, HookOutcome::Accepted);
                Judgement::Store(draft)
            }
            Ok(Answer::Rewrite(message)) => {
                self.metrics
                    .hook_call(Hook::Publish, HookOutcome::Rewritten);
                draft.message = message;
                Judgement::Store(draft)
            }
            Ok(Answer::Refuse(reason)) => {
                self.metrics.hook_call(Hook::Publish, HookOutcome::Refused);
                Judgement::Refused {
                    reason,
                    nonce: draft.nonce,
                }
            }
            Err(error) => {
                self.metrics.hook_call(Hook::Publish, HookOutcome::Failed);
                super::log_failure("publish", &error);
                match self.on_failure {
                    OnFailure::Accept => Judgement::Store(draft),
                    OnFailure::Reject => Judgement::Failed {
                        error,
                        nonce: draft.nonce,
                    },
                }
            }
        }
    }

    fn read_answer(&self, status: u16, body: &[u8]) -> Result<Answer, HookError> {
        match status {
            200 => {
                #[derive(serde::Deserialize)]
                struct Verdict {
                    #[serde(default)]
                    message: Option<Box<RawValue>>,
                }
                let verdict: Verdict = serde_json::from_slice(body)
                    .map_err(|error| HookError::Nonsense(format!("200 with {error}")))?;
                match verdict.message {
                    None => Ok(Answer::Accept),
                    Some(message) if message.get().len() > self.max_message_bytes => {
                        Err(HookError::Nonsense(format!(
                            "a message of {} bytes, over LIVECHAT_MAX_MESSAGE_BYTES",
                            message.get().len()
                        )))
                    }
                    Some(message) => Ok(Answer::Rewrite(message)),
                }
            }
            400..=499 => Ok(Answer::Refuse(
                refusal_reason(body).unwrap_or_else(|| "refused by the app".to_owned()),
            )),
            other => Err(HookError::Status(other, super::preview(body))),
        }
    }
}

enum Answer {
    Accept,
    Rewrite(Box<RawValue>),
    Refuse(String),
}
