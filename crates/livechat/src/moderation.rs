//! Bans and mutes: who may not enter a room (or any), who may read but not write. Kept durably by
//! the engine (a SQLite table, a Redis hash), and by every node in memory, read again whenever a
//! node is told they changed (`crate::control::Control::BansChanged`) and every `RELOAD_EVERY`;
//! each expires by itself at its `until`. Also what a moderator does to users: ban, lift a ban,
//! disconnect (on every node, through the engine's control channel), each told to the app's
//! webhook where it asks.
//!
//! A ban or mute names a user as the API does: `alice` is the user whose token (or connect hook
//! answer) says `id: "alice"`, and, with auth off, the one who chose the name `alice`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::control::{Control, ModerationNews};
use crate::engine::{Engine, EngineError};
use crate::epoch::new_epoch;
use crate::hooks::ConnectHook;
use crate::message::Author;
use crate::room::RoomName;
use crate::store::now_ms;
use crate::tasks::Tasks;
use crate::webhooks::{Event, EventKind, WebhookSettings};

/// How often every node reads the bans again, besides when told they changed.
pub const RELOAD_EVERY: Duration = Duration::from_secs(30);
/// Most bans and mutes in force at once (a moderator flood cannot grow every node's memory).
pub const MAX_BANS: usize = 100_000;
/// Most characters of a ban's or disconnection's reason.
pub const MAX_REASON_CHARS: usize = 200;
/// Most bytes of a user named by a ban.
pub const MAX_USER_BYTES: usize = 256;
/// The longest ban with an end (ten years); longer is `until` lifted.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// May not enter: its connections are closed, new ones refused.
    Ban,
    /// May read, not write: publishes, edits, reactions and typing are refused.
    Mute,
}

/// A ban or mute in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Ban {
    pub id: String,
    /// The user's id (or, with auth off, the name it chose).
    pub user: String,
    /// `None`: every room.
    #[schema(value_type = Option<String>)]
    pub room: Option<RoomName>,
    pub mode: Mode,
    pub reason: String,
    /// When it ends (ms since the Unix epoch); `None`: until lifted.
    pub until: Option<u64>,
    /// When it was set, and by whom.
    pub created_at: u64,
    pub created_by: String,
}

impl Ban {
    pub fn in_force(&self, now: u64) -> bool {
        self.until.is_none_or(|until| until > now)
    }

    fn covers(&self, room: &RoomName) -> bool {
        self.room.as_ref().is_none_or(|banned| banned == room)
    }
}

/// Why a user may not do something.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Barred {
    #[error("banned")]
    Banned { reason: String, until: Option<u64> },
    #[error("muted")]
    Muted { reason: String, until: Option<u64> },
}

impl Barred {
    pub fn until(&self) -> Option<u64> {
        match self {
            Barred::Banned { until, .. } | Barred::Muted { until, .. } => *until,
        }
    }

    /// `banned` or `muted`.
    pub fn word(&self) -> &'static str {
        match self {
            Barred::Banned { .. } => "banned",
            Barred::Muted { .. } => "muted",
        }
    }

    pub fn reason(&self) -> &str {
        let (Barred::Banned { reason, .. } | Barred::Muted { reason, .. }) = self;
        reason
    }

    /// `{"error": "banned" | "muted", "reason", "until"?}`.
    pub fn body(&self) -> serde_json::Value {
        let (Barred::Banned { reason, until } | Barred::Muted { reason, until }) = self;
        let mut body = serde_json::json!({ "error": self.to_string(), "reason": reason });
        if let Some(until) = until {
            body["until"] = serde_json::json!(until);
        }
        body
    }
}

/// A ban or mute asked for.
#[derive(Debug, Clone)]
pub struct BanOrder {
    pub user: String,
    pub room: Option<RoomName>,
    pub mode: Mode,
    pub reason: String,
    /// `None`: until lifted.
    pub duration: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum ModerationError {
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("too many bans and mutes in force (at most {MAX_BANS}); lift some first")]
    TooMany,
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// The bans in force, as this node knows them, by user; and what moderators do.
pub struct Moderation {
    engine: Arc<dyn Engine>,
    /// Which of ban and disconnect events the app's webhook is told.
    webhooks: Option<WebhookSettings>,
    bans: RwLock<HashMap<String, Vec<Ban>>>,
    me: Weak<Moderation>,
    /// Where reloads the control channel asks for run.
    tasks: Tasks,
    /// The connect hook, whose kept answers for a disconnected user are forgotten.
    connect_hook: Option<Arc<ConnectHook>>,
}

impl Moderation {
    pub fn new(
        engine: Arc<dyn Engine>,
        webhooks: Option<WebhookSettings>,
        tasks: Tasks,
        connect_hook: Option<Arc<ConnectHook>>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            engine,
            webhooks,
            bans: RwLock::default(),
            me: me.clone(),
            tasks,
            connect_hook,
        })
    }

    /// Stores a ban or mute, tells every node, and closes the user's connections it covers
    /// (4003 with the reason). Bans past their end are forgotten meanwhile.
    pub async fn ban(&self, order: BanOrder, by: &str) -> Result<Ban, ModerationError> {
        check_user(&order.user)?;
        check_reason(&order.reason)?;
        if order
            .duration
            .is_some_and(|d| d.is_zero() || d > MAX_DURATION)
        {
            return Err(ModerationError::Invalid(format!(
                "`duration` must be 1 to {} seconds (absent: until lifted)",
                MAX_DURATION.as_secs()
            )));
        }
        let now = now_ms();
        let stored = self.engine.bans().await?;
        let (in_force, ended): (Vec<Ban>, Vec<Ban>) =
            stored.into_iter().partition(|ban| ban.in_force(now));
        for ban in ended {
            self.engine.remove_ban(&ban.id).await?;
        }
        if in_force.len() >= MAX_BANS {
            return Err(ModerationError::TooMany);
        }
        let ban = Ban {
            id: format!("b{}", new_epoch()),
            user: order.user,
            room: order.room,
            mode: order.mode,
            reason: order.reason,
            until: order.duration.map(|d| now + d.as_millis() as u64),
            created_at: now,
            created_by: by.to_owned(),
        };
        self.engine.put_ban(ban.clone()).await?;
        self.remember(&ban);
        self.engine.control(Control::BansChanged).await?;
        if ban.mode == Mode::Ban {
            let reason = match ban.reason.as_str() {
                "" => "banned".to_owned(),
                reason => format!("banned: {reason}"),
            };
            self.engine
                .control(Control::Kick {
                    user: ban.user.clone(),
                    rooms: ban.room.clone().map(|room| vec![room]),
                    reason,
                    for_good: false,
                })
                .await?;
        }
        self.tell_the_app(
            EventKind::Ban,
            ban.room.as_ref(),
            serde_json::json!({"ban": &ban}),
        )
        .await;
        Ok(ban)
    }

    /// Lifts a ban or mute on every node; whether there was one with that id.
    pub async fn lift(&self, id: &str) -> Result<bool, ModerationError> {
        let lifted = self.engine.remove_ban(id).await?;
        if lifted {
            self.forget(id);
            self.engine.control(Control::BansChanged).await?;
        }
        Ok(lifted)
    }

    /// Closes every connection of `user` on every node: 4003, or 4004 (`reconnect` false).
    pub async fn disconnect(
        &self,
        user: &str,
        reason: &str,
        reconnect: bool,
    ) -> Result<(), ModerationError> {
        check_user(user)?;
        check_reason(reason)?;
        let told = match (reconnect, reason) {
            (true, "") => "disconnected".to_owned(),
            (false, "") => "disconnected, do not reconnect".to_owned(),
            (_, reason) => format!("disconnected: {reason}"),
        };
        self.engine
            .control(Control::Kick {
                user: user.to_owned(),
                rooms: None,
                reason: told,
                for_good: !reconnect,
            })
            .await?;
        self.tell_the_app(
            EventKind::Disconnect,
            None,
            serde_json::json!({"user": user, "reason": reason, "reconnect": reconnect}),
        )
        .await;
        Ok(())
    }

    /// The bans in force as stored (not as this node last read them), for a user and a room
    /// (bans of every room included) if given, the oldest first.
    pub async fn stored(
        &self,
        user: Option<&str>,
        room: Option<&RoomName>,
    ) -> Result<Vec<Ban>, ModerationError> {
        let now = now_ms();
        let mut listed: Vec<Ban> = self
            .engine
            .bans()
            .await?
            .into_iter()
            .filter(|ban| ban.in_force(now))
            .filter(|ban| user.is_none_or(|user| ban.user == user))
            .filter(|ban| room.is_none_or(|room| ban.covers(room)))
            .collect();
        listed.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(listed)
    }

    async fn tell_the_app(
        &self,
        kind: EventKind,
        room: Option<&RoomName>,
        detail: serde_json::Value,
    ) {
        let (Some(settings), Some(outbox)) = (self.webhooks, self.engine.outbox()) else {
            return;
        };
        if !settings.wants(kind) {
            return;
        }
        let event = Event::detailed(kind, room, now_ms(), detail);
        if let Err(error) = outbox.record(vec![event]).await {
            tracing::warn!(%error, ?kind, "cannot record a webhook event");
        }
    }

    /// Known on this node at once (the others read it when told).
    fn remember(&self, ban: &Ban) {
        let mut bans = self.bans.write().unwrap_or_else(|p| p.into_inner());
        bans.entry(ban.user.clone()).or_default().push(ban.clone());
    }

    fn forget(&self, id: &str) {
        let mut bans = self.bans.write().unwrap_or_else(|p| p.into_inner());
        for user_bans in bans.values_mut() {
            user_bans.retain(|ban| ban.id != id);
        }
        bans.retain(|_, user_bans| !user_bans.is_empty());
    }

    /// Reads the bans again every `RELOAD_EVERY` (besides when told), until the runtime ends.
    pub async fn run(self: Arc<Self>) {
        let mut ticks = tokio::time::interval(RELOAD_EVERY);
        loop {
            ticks.tick().await;
            self.reload().await;
        }
    }

    /// Reads the bans from the engine (those past their end are left out).
    pub async fn reload(&self) {
        match self.engine.bans().await {
            Ok(bans) => {
                let now = now_ms();
                let mut by_user: HashMap<String, Vec<Ban>> = HashMap::new();
                for ban in bans.into_iter().filter(|ban| ban.in_force(now)) {
                    by_user.entry(ban.user.clone()).or_default().push(ban);
                }
                *self.bans.write().unwrap_or_else(|p| p.into_inner()) = by_user;
            }
            Err(error) => tracing::warn!(%error, "cannot read the bans; the ones known are kept"),
        }
    }

    /// The bans in force, for a user and a room if given.
    pub fn list(&self, user: Option<&str>, room: Option<&RoomName>) -> Vec<Ban> {
        let now = now_ms();
        let bans = self.bans.read().unwrap_or_else(|p| p.into_inner());
        let mut listed: Vec<Ban> = bans
            .iter()
            .filter(|(banned, _)| user.is_none_or(|user| user == *banned))
            .flat_map(|(_, bans)| bans)
            .filter(|ban| ban.in_force(now))
            .filter(|ban| room.is_none_or(|room| ban.room.as_ref().is_none_or(|r| r == room)))
            .cloned()
            .collect();
        listed.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        listed
    }

    /// The first ban of `user` (its id or chosen name, see the module) covering `room` in `mode`.
    fn find(&self, user: &str, room: &RoomName, mode: Mode) -> Option<Ban> {
        let bans = self.bans.read().unwrap_or_else(|p| p.into_inner());
        let now = now_ms();
        bans.get(user)?
            .iter()
            .find(|ban| ban.mode == mode && ban.in_force(now) && ban.covers(room))
            .cloned()
    }

    /// Whether `user` may enter `room` (anonymous users are never banned: they have no name).
    pub fn may_enter(&self, user: Option<&Author>, room: &RoomName) -> Result<(), Barred> {
        match user
            .and_then(banned_name)
            .and_then(|name| self.find(name, room, Mode::Ban))
        {
            Some(ban) => Err(Barred::Banned {
                reason: ban.reason,
                until: ban.until,
            }),
            None => Ok(()),
        }
    }

    /// Whether `user` may write in `room` (publish, edit, delete, react, type).
    pub fn may_write(&self, user: Option<&Author>, room: &RoomName) -> Result<(), Barred> {
        self.may_enter(user, room)?;
        match user
            .and_then(banned_name)
            .and_then(|name| self.find(name, room, Mode::Mute))
        {
            Some(ban) => Err(Barred::Muted {
                reason: ban.reason,
                until: ban.until,
            }),
            None => Ok(()),
        }
    }
}

fn check_user(user: &str) -> Result<(), ModerationError> {
    if user.is_empty() || user.len() > MAX_USER_BYTES || user.chars().any(char::is_control) {
        return Err(ModerationError::Invalid(format!(
            "`user` must be 1 to {MAX_USER_BYTES} bytes without control characters"
        )));
    }
    Ok(())
}

fn check_reason(reason: &str) -> Result<(), ModerationError> {
    if reason.chars().count() > MAX_REASON_CHARS || reason.chars().any(char::is_control) {
        return Err(ModerationError::Invalid(format!(
            "`reason` must be at most {MAX_REASON_CHARS} characters without control characters"
        )));
    }
    Ok(())
}

/// The name bans use for a user: its id, or (auth off) the name it chose.
fn banned_name(user: &Author) -> Option<&str> {
    user.id.as_deref().or(user.name.as_deref())
}

impl ModerationNews for Moderation {
    fn bans_changed(&self) {
        // Told by the subscriber, which must not wait on Redis for it: a short task of its own
        // (bounded by the Redis timeout).
        if let Some(moderation) = self.me.upgrade() {
            self.tasks
                .spawn_to_end(async move { moderation.reload().await });
        }
    }

    fn user_disconnected(&self, user: &str) {
        // Otherwise a reconnect within the hook's cache time would be let in on the answer the
        // app gave before it disconnected the user (told not to come back, or its account
        // closed).
        if let Some(hook) = &self.connect_hook {
            hook.forget_user(user);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans_cover_their_room_or_all_and_end_by_themselves() {
        let room = RoomName::parse("lobby").unwrap();
        let ban = Ban {
            id: "b1".into(),
            user: "alice".into(),
            room: Some(room.clone()),
            mode: Mode::Ban,
            reason: "spam".into(),
            until: Some(now_ms() + 60_000),
            created_at: 0,
            created_by: "server".into(),
        };
        assert!(ban.in_force(now_ms()) && !ban.in_force(now_ms() + 120_000));
        assert!(ban.covers(&room) && !ban.covers(&RoomName::parse("other").unwrap()));
        let chosen = Author {
            id: None,
            name: Some("alice".into()),
        };
        assert_eq!(banned_name(&chosen), Some("alice"));
    }
}
