//! What a connected WebSocket client may do, and what each of its text frames asks for: publish
//! as its verified (or chosen) identity, within its rate limit, or refresh its token. The
//! connection loop asks this and carries out the answer.

use std::sync::Arc;

use bytes::Bytes;

use crate::auth::{Auth, Identity};
use crate::keepalive::Liveness;
use crate::message::{Author, BadPublish, Draft, Publish, error_frame};
use crate::metrics::PublishError;
use crate::rate::{ConnectionLimiter, Verdict};
use crate::room::RoomName;
use crate::websocket::CloseCode;

/// Close code and reason for a client that keeps sending far over its rate limit.
pub const RATE_ABUSE: (CloseCode, &str) = (CloseCode::POLICY_VIOLATION, "rate limit");

/// What to do with a client's text frame.
pub enum Action {
    Publish(Draft),
    /// Answer the client alone.
    Reply(Bytes),
    /// A publish refused (read-only, rate limited): the answer, and the reason for the metrics.
    Refuse(PublishError, Bytes),
    Close((CloseCode, &'static str)),
    /// Done (a token refreshed).
    Nothing,
}

/// A connection's standing: who it is, whether it may publish, how fast.
pub struct Session {
    user: Option<Arc<Author>>,
    can_publish: bool,
    limiter: Option<Box<ConnectionLimiter>>,
}

impl Session {
    pub fn new(identity: &Identity, limiter: Option<ConnectionLimiter>) -> Self {
        Self {
            user: identity.user.clone(),
            can_publish: identity.can_publish,
            limiter: limiter.map(Box::new),
        }
    }

    /// Decides what a text frame from the client asks for, in `room`.
    pub fn on_text(
        &mut self,
        text: &[u8],
        room: &RoomName,
        auth: &Auth,
        liveness: &Liveness,
    ) -> Action {
        let publish = match Publish::parse(text) {
            Ok(publish) => publish,
            Err(bad) => return Action::Reply(error_frame(&bad.to_string())),
        };
        if let Some(token) = &publish.token
            && auth.is_required()
        {
            if let Err(refused) = self.refresh(token, room, auth, liveness) {
                return Action::Reply(error_frame(&refused.to_string()));
            }
            if publish.message.is_none() {
                return Action::Nothing;
            }
        }
        let Some(message) = publish.message else {
            return Action::Reply(error_frame(&BadPublish::MissingMessage.to_string()));
        };
        if !self.can_publish {
            let refusal = error_frame(&crate::auth::AuthError::ReadOnly.to_string());
            return Action::Refuse(PublishError::Forbidden, refusal);
        }
        if let Some(limiter) = &mut self.limiter {
            match limiter.check() {
                Verdict::Allowed => {}
                Verdict::Limited { retry_after_ms } => {
                    let refusal = rate_limited_frame(retry_after_ms);
                    return Action::Refuse(PublishError::RateLimited, refusal);
                }
                Verdict::Abusive => return Action::Close(RATE_ABUSE),
            }
        }
        Action::Publish(Draft {
            room: room.clone(),
            message,
            user: self.user.clone(),
            nonce: publish.nonce,
        })
    }

    /// `{"token": NEW}`: a fresh token for the same user, still allowed in this room, pushes
    /// the connection's expiry back.
    fn refresh(
        &mut self,
        token: &str,
        room: &RoomName,
        auth: &Auth,
        liveness: &Liveness,
    ) -> Result<(), crate::auth::AuthError> {
        let fresh = auth.refresh(self.user.as_deref(), token)?;
        fresh.check_room(room)?;
        liveness.expire_at(fresh.expires_at);
        self.user = fresh.user;
        self.can_publish = fresh.can_publish;
        Ok(())
    }
}

/// `{"error":"rate limited","retry_after_ms":N}`.
pub fn rate_limited_frame(retry_after_ms: u64) -> Bytes {
    let body = serde_json::json!({ "error": "rate limited", "retry_after_ms": retry_after_ms });
    crate::websocket::frame::text(&[body.to_string().as_bytes()])
}
