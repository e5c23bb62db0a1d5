//! What a WebSocket connection waits for from the engine, in the order it asked: publishes being
//! stored and changes being made. Each answer becomes what the client alone is told: nothing (its
//! echo comes with the room's), the first message again (a nonce seen before), a change's event
//! (when it does not receive them as a member with metadata), or an error frame naming what it
//! answers.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;

use crate::engine::{Accepted, ChangeReceipt, EngineError, Receipt};
use crate::message::{ErrorReply, Frames, Nonce, Request};
use crate::metrics::Metrics;
use crate::outgoing::OutgoingFrame;

pub enum Waiting {
    Publish {
        receipt: Receipt,
        bytes: usize,
        /// Named in the error frame if it fails.
        nonce: Option<Nonce>,
    },
    Change {
        receipt: ChangeReceipt,
        request: Request,
        id: u64,
    },
    /// A read position being moved (and the user's other connections told).
    Read {
        reading: BoxFuture<'static, Result<u64, EngineError>>,
        id: u64,
    },
}

/// An answer: the bytes of publishing it frees, and what to tell the client.
pub struct Answered {
    pub bytes: usize,
    pub reply: Option<OutgoingFrame>,
}

impl Waiting {
    /// The answer, once the engine has given it; `meta`: the client receives the room's events.
    pub fn poll(&mut self, cx: &mut Context<'_>, meta: bool, metrics: &Metrics) -> Poll<Answered> {
        match self {
            Waiting::Publish {
                receipt,
                bytes,
                nonce,
            } => {
                let answer = std::task::ready!(Pin::new(receipt).poll(cx));
                let reply = match answer {
                    Ok(Accepted {
                        original: Some(original),
                        ..
                    }) => {
                        // Sent again (its echo was missed): the first one, to this client alone.
                        metrics.duplicates.increment(1);
                        let echo = Frames::encode(&original, meta);
                        Some(echo.meta.unwrap_or(echo.plain))
                    }
                    Ok(_) => {
                        metrics.published(false);
                        None
                    }
                    Err(error) => {
                        metrics.publish_error(error.metric());
                        let reason = error.to_string();
                        Some(
                            ErrorReply::new(&reason, Request::Message)
                                .nonce(nonce.as_ref())
                                .frame(),
                        )
                    }
                };
                Poll::Ready(Answered {
                    bytes: *bytes,
                    reply,
                })
            }
            Waiting::Change {
                receipt,
                request,
                id,
            } => {
                let answer = std::task::ready!(Pin::new(receipt).poll(cx));
                let reply = match answer {
                    // Members with metadata are told by the room; the others by this.
                    Ok(Ok(changed)) => (!meta).then(|| changed.frame()),
                    Ok(Err(refused)) => Some(
                        ErrorReply::new(&refused.to_string(), *request)
                            .id(*id)
                            .frame(),
                    ),
                    Err(error) => Some(
                        ErrorReply::new(&error.to_string(), *request)
                            .id(*id)
                            .frame(),
                    ),
                };
                Poll::Ready(Answered { bytes: 0, reply })
            }
            Waiting::Read { reading, id } => {
                let reply = std::task::ready!(reading.as_mut().poll(cx))
                    .err()
                    .map(|error| {
                        ErrorReply::new(&error.to_string(), Request::Read)
                            .id(*id)
                            .frame()
                    });
                Poll::Ready(Answered { bytes: 0, reply })
            }
        }
    }
}
