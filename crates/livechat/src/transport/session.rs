//! What a connected WebSocket client may do, and what each of its text frames asks for: publish
//! as its verified (or chosen) identity, within its rate limit, refresh its token, or say that
//! it is typing. The connection loop asks this and carries out the answer.

use std::sync::Arc;

use crate::auth::{Auth, Identity};
use crate::change::{Change, ChangeKind};
use crate::keepalive::Liveness;
use crate::message::{
    Action as MessageAction, Author, BadPublish, Draft, ErrorReply, Nonce, Publish, Request,
};
use crate::metrics::PublishError;
use crate::moderation::Moderation;
use crate::outgoing::OutgoingFrame;
use crate::presence::{TypingGate, TypingVerdict};
use crate::rate::{ConnectionLimiter, Verdict};
use crate::room::RoomName;
use crate::websocket::CloseCode;

/// Close code and reason for a client that keeps sending far over its rate limit.
pub const RATE_ABUSE: (CloseCode, &str) = (CloseCode::POLICY_VIOLATION, "rate limit");

/// What to do with a client's text frame.
pub enum Action {
    Publish(Draft),
    /// Change a stored message (edit, delete, react).
    Change(Change),
    /// Move the user's read position in the room forward to this id.
    Read(u64),
    /// Tell the room this user is typing.
    Typing(Arc<Author>),
    /// Answer the client alone.
    Reply(OutgoingFrame),
    /// A publish refused (read-only, rate limited): the answer, and the reason for the metrics.
    Refuse(PublishError, OutgoingFrame),
    Close((CloseCode, &'static str)),
    /// Done (a token refreshed, typing absorbed).
    Nothing,
}

/// A connection's standing: who it is, whether it may publish, how fast.
pub struct Session {
    user: Option<Arc<Author>>,
    can_publish: bool,
    /// May change any message (a token's `moderate` claim).
    moderator: bool,
    limiter: Option<Box<ConnectionLimiter>>,
    /// Made when it first types.
    typing: Option<Box<TypingGate>>,
}

impl Session {
    pub fn new(identity: &Identity, limiter: Option<ConnectionLimiter>) -> Self {
        Self {
            user: identity.user.clone(),
            can_publish: identity.can_publish,
            moderator: identity.moderator,
            limiter: limiter.map(Box::new),
            typing: None,
        }
    }

    /// Decides what a text frame from the client asks for, in `room`.
    pub fn on_text(
        &mut self,
        text: &[u8],
        room: &RoomName,
        auth: &Auth,
        moderation: &Moderation,
        liveness: &Liveness,
    ) -> Action {
        let publish = match Publish::parse(text) {
            Ok(publish) => publish,
            Err(bad) => {
                return Action::Reply(ErrorReply::new(&bad.to_string(), bad.request()).frame());
            }
        };
        if let Some(token) = &publish.token
            && auth.is_required()
        {
            match self.refresh(token, room, auth, liveness) {
                Err(refused) => {
                    let reason = refused.to_string();
                    return Action::Reply(ErrorReply::new(&reason, Request::Token).frame());
                }
                Ok(confirmed)
                    if publish.message.is_none()
                        && publish.typing.is_none()
                        && publish.action.is_none() =>
                {
                    return Action::Reply(confirmed);
                }
                // The confirmation is not sent when the frame also asks for something else:
                // its own answer is what the client waits for.
                Ok(_) => {}
            }
        }
        if let Some(action) = publish.action {
            return self.act(action, room, moderation);
        }
        if let (None, Some(typing)) = (&publish.message, publish.typing) {
            return match typing {
                true => self.typing(room, moderation),
                false => Action::Nothing,
            };
        }
        let nonce = publish.nonce.as_ref();
        let Some(message) = publish.message else {
            let missing = BadPublish::MissingMessage.to_string();
            return Action::Reply(
                ErrorReply::new(&missing, Request::Message)
                    .nonce(nonce)
                    .frame(),
            );
        };
        if !self.can_publish {
            let reason = crate::auth::AuthError::ReadOnly.to_string();
            let refusal = ErrorReply::new(&reason, Request::Message).nonce(nonce);
            return Action::Refuse(PublishError::Forbidden, refusal.frame());
        }
        if let Err(barred) = moderation.may_write(self.user.as_deref(), room) {
            let refusal = ErrorReply::barred(&barred, Request::Message).nonce(nonce);
            return Action::Refuse(PublishError::Barred, refusal.frame());
        }
        if let Some(refused) = self.within_rate(Request::Message, nonce) {
            return refused;
        }
        Action::Publish(Draft {
            room: room.clone(),
            message,
            user: self.user.clone(),
            nonce: publish.nonce,
            reply_to: publish.reply_to,
            from_layer: false,
        })
    }

    /// A publish or reaction over the rate limit: the refusal (or the close, for abuse).
    fn within_rate(&mut self, request: Request, nonce: Option<&Nonce>) -> Option<Action> {
        let limiter = self.limiter.as_mut()?;
        match limiter.check() {
            Verdict::Allowed => None,
            Verdict::Limited { retry_after_ms } => {
                let refusal = ErrorReply::rate_limited(request, retry_after_ms).nonce(nonce);
                Some(Action::Refuse(PublishError::RateLimited, refusal.frame()))
            }
            Verdict::Abusive => Some(Action::Close(RATE_ABUSE)),
        }
    }

    /// An edit, deletion, reaction or read position: each needs a name (a token, or with auth
    /// off a chosen one); edits and deletions also a token that may publish (or a moderator's),
    /// reactions count against the rate limit.
    fn act(&mut self, action: MessageAction, room: &RoomName, moderation: &Moderation) -> Action {
        let request = action.request();
        let Some(user) = self
            .user
            .clone()
            .filter(|user| user.name.is_some() || user.id.is_some())
        else {
            let reason = "this needs a name: connect with ?name= (or a token when auth is on)";
            return Action::Reply(ErrorReply::new(reason, request).frame());
        };
        let (id, kind) = match action {
            MessageAction::Read { id } => return Action::Read(id),
            MessageAction::Edit { id, message } => (id, ChangeKind::Edit(message)),
            MessageAction::Delete { id } => (id, ChangeKind::Delete),
            MessageAction::React { id, emoji, on } => (id, ChangeKind::React { emoji, on }),
        };
        if let Err(barred) = moderation.may_write(Some(&user), room) {
            let refusal = ErrorReply::barred(&barred, request).id(id);
            return Action::Refuse(PublishError::Barred, refusal.frame());
        }
        if matches!(kind, ChangeKind::React { .. })
            && let Some(refused) = self.within_rate(request, None)
        {
            return refused;
        }
        if matches!(kind, ChangeKind::Edit(_) | ChangeKind::Delete)
            && !self.can_publish
            && !self.moderator
        {
            let reason = crate::auth::AuthError::ReadOnly.to_string();
            let refusal = ErrorReply::new(&reason, request).id(id);
            return Action::Refuse(PublishError::Forbidden, refusal.frame());
        }
        Action::Change(Change {
            room: room.clone(),
            id,
            by: user,
            moderator: self.moderator,
            kind,
        })
    }

    /// `{"typing": true}`: passed on at most once per period, refused when far too frequent.
    fn typing(&mut self, room: &RoomName, moderation: &Moderation) -> Action {
        let Some(user) = self
            .user
            .clone()
            .filter(|user| user.name.is_some() || user.id.is_some())
        else {
            let reason = "typing needs a name: connect with ?name= (or a token when auth is on)";
            return Action::Reply(ErrorReply::new(reason, Request::Typing).frame());
        };
        if let Err(barred) = moderation.may_write(Some(&user), room) {
            return Action::Reply(ErrorReply::barred(&barred, Request::Typing).frame());
        }
        match self.typing.get_or_insert_with(Box::default).check() {
            TypingVerdict::Pass => Action::Typing(user),
            TypingVerdict::Absorb => Action::Nothing,
            TypingVerdict::Refuse { retry_after_ms } => Action::Refuse(
                PublishError::RateLimited,
                ErrorReply::rate_limited(Request::Typing, retry_after_ms).frame(),
            ),
        }
    }

    /// The user this connection speaks for (`None`: anonymous).
    pub fn user(&self) -> Option<&Arc<Author>> {
        self.user.as_ref()
    }

    /// The key of the user this connection speaks for (`None`: anonymous).
    pub fn user_key(&self) -> Option<String> {
        self.user
            .as_deref()
            .and_then(crate::presence::user_key)
            .map(|key| key.to_string())
    }

    /// The connect hook vouched for the connection again: the same user keeps it (with what it
    /// may now do); another user does not (false: the connection ends).
    pub fn renewed(&mut self, identity: &Identity) -> bool {
        let id = |user: Option<&Author>| user.and_then(|user| user.id.clone());
        if id(identity.user.as_deref()) != id(self.user.as_deref()) {
            return false;
        }
        self.user = identity.user.clone();
        self.can_publish = identity.can_publish;
        self.moderator = identity.moderator;
        true
    }

    /// `{"token": NEW}`: a fresh token for the same user, still allowed in this room, pushes
    /// the connection's expiry back; the answer confirms it: `{"event": "token", "exp": EXP}`.
    fn refresh(
        &mut self,
        token: &str,
        room: &RoomName,
        auth: &Auth,
        liveness: &Liveness,
    ) -> Result<OutgoingFrame, crate::auth::AuthError> {
        let fresh = auth.refresh(self.user.as_deref(), token)?;
        fresh.check_room(room)?;
        liveness.expire_at(fresh.closes_at());
        let confirmation = serde_json::json!({
            "event": "token",
            "room": room,
            "exp": fresh.expires,
        });
        self.user = fresh.user;
        self.can_publish = fresh.can_publish;
        self.moderator = fresh.moderator;
        Ok(OutgoingFrame::json(&confirmation))
    }
}
