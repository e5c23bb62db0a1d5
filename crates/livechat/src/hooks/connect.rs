//! The connect hook: asks the app who a caller without a token is, from the caller's own headers
//! (its session cookie), and admits it with the claims the app gives (docs/hooks.md).
//!
//! A reconnect storm must not become a storm on the app: identical calls in flight at once are
//! made once (everyone waiting shares the answer), and an answer is reused for `cache_for` by
//! calls with the same forwarded headers and room. Answers kept are bounded in bytes; failures
//! are never kept (the next caller asks again).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName};
use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use serde::{Deserialize, Serialize};

use super::client::Endpoint;
use super::{HookError, refusal_reason};
use crate::auth::{Identity, MAX_NAME_CHARS, subject};
use crate::message::Author;
use crate::metrics::{Hook, HookOutcome, Metrics};
use crate::room::RoomName;
use crate::store::now_ms;

/// Bytes of answers (and their keys) kept for reuse at most; the oldest go first.
const MAX_CACHED_BYTES: usize = 16 * 1024 * 1024;
/// Forwarded headers longer than this are not part of a cache key: such calls are not cached.
const MAX_KEY_BYTES: usize = 16 * 1024;
/// Bounds on what the app may make the server hold per admitted connection.
const MAX_USER_ID_BYTES: usize = 256;
const MAX_ROOM_ENTRIES: usize = 1000;
const MAX_ROOM_ENTRY_BYTES: usize = 100;
const MAX_EXPIRES_IN: u64 = 365 * 24 * 3600;

/// What a handshake or request tells the hook.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectRequest {
    /// `None` for requests about no room (`GET /chat/rooms/`).
    pub room: Option<RoomName>,
    pub client_ip: IpAddr,
    pub transport: Transport,
    pub path: String,
    /// The query's parameters, but `token`.
    pub query: BTreeMap<String, String>,
    /// The forwarded headers the request has, by lowercase name.
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    WebSocket,
    Http,
    /// An event stream (`GET /sse/chat/{room}/`).
    #[serde(rename = "sse")]
    EventStream,
}

/// The app's word on a caller.
#[derive(Debug, Clone)]
pub enum Verdict {
    Admitted(Admission),
    /// 401 or 403, with the app's reason.
    Refused {
        status: u16,
        reason: String,
    },
}

/// A caller the app vouched for.
#[derive(Debug, Clone)]
pub struct Admission {
    user: Option<Author>,
    rooms: Option<Vec<String>>,
    can_publish: bool,
    moderator: bool,
    /// When the answer runs out (Unix seconds), if it said `expires_in`.
    expires: Option<u64>,
}

impl Admission {
    pub fn identity(&self) -> Identity {
        Identity::admitted(
            self.user.clone(),
            self.rooms.clone(),
            self.can_publish,
            self.moderator,
            self.expires,
        )
    }
}

type Call = Shared<BoxFuture<'static, Result<Arc<Verdict>, HookError>>>;

pub struct ConnectHook {
    endpoint: Endpoint,
    /// `LIVECHAT_HOOK_HEADERS`.
    forwarded: Vec<HeaderName>,
    cache_for: Duration,
    metrics: Arc<Metrics>,
    answers: Mutex<Answers>,
}

#[derive(Default)]
struct Answers {
    in_flight: HashMap<Arc<str>, Call>,
    kept: HashMap<Arc<str>, Kept>,
    /// Keys in the order they were kept, to drop the oldest.
    order: VecDeque<Arc<str>>,
    bytes: usize,
}

struct Kept {
    verdict: Arc<Verdict>,
    at: Instant,
    bytes: usize,
}

impl ConnectHook {
    pub fn new(
        endpoint: Endpoint,
        forwarded: Vec<HeaderName>,
        cache_for: Duration,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            endpoint,
            forwarded,
            cache_for,
            metrics,
            answers: Mutex::default(),
        })
    }

    /// The headers of `headers` the hook is told, by lowercase name (several values of one
    /// header joined with `, `; values that are not text left out).
    pub fn forwarded_headers(&self, headers: &HeaderMap) -> BTreeMap<String, String> {
        let mut forwarded = BTreeMap::new();
        for name in &self.forwarded {
            let values: Vec<&str> = headers
                .get_all(name)
                .iter()
                .filter_map(|value| value.to_str().ok())
                .collect();
            if !values.is_empty() {
                let separator = if name == axum::http::header::COOKIE {
                    "; "
                } else {
                    ", "
                };
                forwarded.insert(name.as_str().to_owned(), values.join(separator));
            }
        }
        forwarded
    }

    /// Asks the app (or reuses its answer) about `request`.
    pub async fn ask(self: &Arc<Self>, request: ConnectRequest) -> Result<Arc<Verdict>, HookError> {
        self.ask_or_reuse(request, true).await
    }

    /// Asks the app about `request` again (joining a call in flight, but not reusing a kept
    /// answer): a connection's admission running out.
    pub async fn ask_fresh(
        self: &Arc<Self>,
        request: ConnectRequest,
    ) -> Result<Arc<Verdict>, HookError> {
        self.ask_or_reuse(request, false).await
    }

    async fn ask_or_reuse(
        self: &Arc<Self>,
        request: ConnectRequest,
        reuse_kept: bool,
    ) -> Result<Arc<Verdict>, HookError> {
        let key = cache_key(&request);
        // A caller that goes away while the call is in flight drops its share of it; the last
        // one to go takes the unfinished call off the list (nobody polls it any more).
        let _leaving = key.clone().map(|key| Leaving {
            hook: self.clone(),
            key,
        });
        let call = {
            let mut answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(key) = &key {
                if let Some(kept) = answers.kept.get(key)
                    && reuse_kept
                    && kept.at.elapsed() < self.cache_for
                {
                    self.metrics.hook_call(Hook::Connect, HookOutcome::Reused);
                    return Ok(kept.verdict.clone());
                }
                if let Some(call) = answers.in_flight.get(key) {
                    self.metrics.hook_call(Hook::Connect, HookOutcome::Reused);
                    call.clone()
                } else {
                    let call = self
                        .clone()
                        .call(request, Some(key.clone()))
                        .boxed()
                        .shared();
                    answers.in_flight.insert(key.clone(), call.clone());
                    call
                }
            } else {
                self.clone().call(request, None).boxed().shared()
            }
        };
        call.await
    }

    /// One call to the app; its answer kept under `key` (and the call taken off the list of
    /// those in flight) before anyone waiting sees it.
    async fn call(
        self: Arc<Self>,
        request: ConnectRequest,
        key: Option<Arc<str>>,
    ) -> Result<Arc<Verdict>, HookError> {
        let verdict = match crate::json::to_vec(&request) {
            Ok(body) => match self.endpoint.post(Bytes::from(body)).await {
                Ok(answer) => read_answer(answer.status, &answer.body),
                Err(error) => Err(HookError::Call(error)),
            },
            Err(error) => Err(HookError::Unencodable(error)),
        };
        let outcome = match &verdict {
            Ok(Verdict::Admitted(_)) => HookOutcome::Accepted,
            Ok(Verdict::Refused { .. }) => HookOutcome::Refused,
            Err(_) => HookOutcome::Failed,
        };
        self.metrics.hook_call(Hook::Connect, outcome);
        if let Err(error) = &verdict {
            super::log_failure("connect", error);
        }
        let verdict = verdict.map(Arc::new);
        if let Some(key) = key {
            let mut answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
            answers.in_flight.remove(&key);
            if let Ok(verdict) = &verdict
                && !self.cache_for.is_zero()
            {
                answers.keep(key, verdict.clone(), self.cache_for);
            }
        }
        verdict
    }
}

impl ConnectHook {
    /// Forgets the kept answers that admitted `user` (by id, as moderation names users), so
    /// that its next connection asks the app again. A call in flight is not stopped: its answer
    /// comes from the app after the disconnect.
    pub fn forget_user(&self, user: &str) {
        let mut answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        let Answers {
            kept, order, bytes, ..
        } = &mut *answers;
        kept.retain(|_, kept| {
            let admits = kept.verdict.admits(user);
            if admits {
                *bytes -= kept.bytes;
            }
            !admits
        });
        order.retain(|key| kept.contains_key(key));
    }
}

struct Leaving {
    hook: Arc<ConnectHook>,
    key: Arc<str>,
}

impl Drop for Leaving {
    fn drop(&mut self) {
        let mut answers = self.hook.answers.lock().unwrap_or_else(|p| p.into_inner());
        // Only the list's own handle left: no caller waits for it.
        if answers
            .in_flight
            .get(&self.key)
            .is_some_and(|call| call.strong_count().is_some_and(|count| count <= 1))
        {
            answers.in_flight.remove(&self.key);
        }
    }
}

impl Answers {
    fn keep(&mut self, key: Arc<str>, verdict: Arc<Verdict>, cache_for: Duration) {
        let bytes = key.len() + verdict.bytes();
        // Expired ones first, then the oldest while over the budget.
        while let Some(oldest) = self.order.front() {
            let expired = self
                .kept
                .get(oldest)
                .is_none_or(|kept| kept.at.elapsed() >= cache_for);
            if !expired && self.bytes + bytes <= MAX_CACHED_BYTES {
                break;
            }
            if let Some(oldest) = self.order.pop_front()
                && let Some(gone) = self.kept.remove(&oldest)
            {
                self.bytes -= gone.bytes;
            }
        }
        if let Some(previous) = self.kept.insert(
            key.clone(),
            Kept {
                verdict,
                at: Instant::now(),
                bytes,
            },
        ) {
            self.bytes -= previous.bytes;
            self.order.retain(|kept| *kept != key);
        }
        self.bytes += bytes;
        self.order.push_back(key);
    }
}

impl Verdict {
    /// Whether it admits the user with this id.
    fn admits(&self, user: &str) -> bool {
        matches!(self, Verdict::Admitted(admission)
            if admission.user.as_ref().and_then(|author| author.id.as_deref()) == Some(user))
    }

    /// Roughly what it holds, for the cache's budget.
    fn bytes(&self) -> usize {
        match self {
            Verdict::Refused { reason, .. } => 64 + reason.len(),
            Verdict::Admitted(admission) => {
                let user = admission.user.as_ref().map_or(0, |user| {
                    user.id.as_ref().map_or(0, String::len)
                        + user.name.as_ref().map_or(0, String::len)
                });
                let rooms = admission
                    .rooms
                    .as_ref()
                    .map_or(0, |rooms| rooms.iter().map(|room| room.len() + 24).sum());
                96 + user + rooms
            }
        }
    }
}

/// What makes two calls the same: the forwarded headers and the room. `None`: too long to keep.
fn cache_key(request: &ConnectRequest) -> Option<Arc<str>> {
    let mut key = String::new();
    key.push_str(request.room.as_ref().map_or("", |room| room.as_str()));
    for (name, value) in &request.headers {
        key.push('\n');
        key.push_str(name);
        key.push(':');
        key.push_str(value);
    }
    (key.len() <= MAX_KEY_BYTES).then(|| Arc::from(key))
}

/// The app's answer: 200 with claims, 401/403 with a reason; anything else is a failure.
fn read_answer(status: u16, body: &[u8]) -> Result<Verdict, HookError> {
    match status {
        200 => {
            let claims: Claims = serde_json::from_slice(body)
                .map_err(|error| HookError::Nonsense(format!("200 with {error}")))?;
            claims.admission().map(Verdict::Admitted)
        }
        401 | 403 => Ok(Verdict::Refused {
            status,
            reason: refusal_reason(body).unwrap_or_else(|| "refused by the app".to_owned()),
        }),
        other => Err(HookError::Status(other, super::preview(body))),
    }
}

/// The claims a 200 carries, as the app writes them.
#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    user: Option<ClaimedUser>,
    #[serde(default)]
    rooms: Option<ClaimedRooms>,
    #[serde(default)]
    publish: Option<bool>,
    #[serde(default)]
    moderate: Option<bool>,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct ClaimedUser {
    #[serde(default, deserialize_with = "subject")]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ClaimedRooms {
    List(Vec<String>),
    /// `"*"`: every room.
    Every(String),
}

impl Claims {
    fn admission(self) -> Result<Admission, HookError> {
        let nonsense = |what: &str| Err(HookError::Nonsense(format!("200 with {what}")));
        let user = match self.user {
            None => None,
            Some(ClaimedUser { id: None, .. }) => return nonsense("a user without an `id`"),
            Some(ClaimedUser { id: Some(id), .. })
                if id.is_empty() || id.len() > MAX_USER_ID_BYTES =>
            {
                return nonsense("a user `id` that is empty or over 256 bytes");
            }
            Some(ClaimedUser { id, name }) => Some(Author {
                id,
                name: name.map(|name| {
                    name.chars()
                        .filter(|c| !c.is_control())
                        .take(MAX_NAME_CHARS)
                        .collect()
                }),
            }),
        };
        let rooms = match self.rooms {
            None => None,
            Some(ClaimedRooms::Every(every)) if every == "*" => None,
            Some(ClaimedRooms::Every(other)) => {
                return nonsense(&format!("`rooms` {other:?} (a list, or \"*\")"));
            }
            Some(ClaimedRooms::List(rooms)) => {
                if rooms.len() > MAX_ROOM_ENTRIES
                    || rooms.iter().any(|room| room.len() > MAX_ROOM_ENTRY_BYTES)
                {
                    return nonsense("more than 1,000 `rooms` or one over 100 bytes");
                }
                Some(rooms)
            }
        };
        let expires = match self.expires_in {
            None => None,
            Some(seconds) if (1..=MAX_EXPIRES_IN).contains(&seconds) => {
                Some(now_ms() / 1000 + seconds)
            }
            Some(_) => return nonsense("`expires_in` not from 1 to 31536000 seconds"),
        };
        Ok(Admission {
            user,
            rooms,
            can_publish: self.publish.unwrap_or(true),
            moderator: self.moderate.unwrap_or(false),
            expires,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_claims_refusals_and_nonsense() {
        let admitted = read_answer(
            200,
            br#"{"user": {"id": 42, "name": "alice"}, "rooms": ["lobby", "dev-*"], "publish": false, "expires_in": 60}"#,
        )
        .unwrap();
        let Verdict::Admitted(admission) = admitted else {
            panic!("admitted")
        };
        let identity = admission.identity();
        assert_eq!(identity.user.as_ref().unwrap().id.as_deref(), Some("42"));
        assert!(!identity.can_publish);
        assert!(identity.may_enter(&RoomName::parse("dev-1").unwrap()));
        assert!(!identity.may_enter(&RoomName::parse("ops").unwrap()));
        assert!(identity.closes_at().unwrap() >= now_ms() / 1000 + 59);
        let every = read_answer(200, br#"{"user": null, "rooms": "*"}"#).unwrap();
        assert!(matches!(
            every,
            Verdict::Admitted(Admission {
                user: None,
                rooms: None,
                ..
            })
        ));
        let refused = read_answer(403, br#"{"error": "not in\nthis room"}"#).unwrap();
        assert!(
            matches!(refused, Verdict::Refused { status: 403, reason } if reason == "not in this room")
        );
        let bare = read_answer(401, b"<html>login</html>").unwrap();
        assert!(matches!(bare, Verdict::Refused { status: 401, .. }));
        for (status, body) in [
            (200, &b"not json"[..]),
            (200, br#"{"user": {"name": "no id"}}"#),
            (200, br#"{"rooms": "lobby"}"#),
            (200, br#"{"expires_in": 0}"#),
            (500, b"oops"),
            (302, b""),
        ] {
            assert!(read_answer(status, body).is_err(), "{status} {body:?}");
        }
    }

    fn request(room: &str, cookie: &str) -> ConnectRequest {
        ConnectRequest {
            room: Some(RoomName::parse(room).unwrap()),
            client_ip: IpAddr::from([127, 0, 0, 1]),
            transport: Transport::WebSocket,
            path: format!("/ws/chat/{room}/"),
            query: BTreeMap::from([("meta".into(), "1".into())]),
            headers: BTreeMap::from([("cookie".into(), cookie.into())]),
        }
    }

    #[test]
    fn the_key_is_the_headers_and_the_room() {
        let a = cache_key(&request("lobby", "sessionid=1")).unwrap();
        let mut other_query = request("lobby", "sessionid=1");
        other_query.query.clear();
        other_query.client_ip = IpAddr::from([10, 0, 0, 1]);
        assert_eq!(cache_key(&other_query).unwrap(), a);
        assert_ne!(cache_key(&request("lobby", "sessionid=2")).unwrap(), a);
        assert_ne!(cache_key(&request("dev", "sessionid=1")).unwrap(), a);
        assert!(cache_key(&request("lobby", &"x".repeat(MAX_KEY_BYTES))).is_none());
    }

    #[test]
    fn kept_answers_stay_under_their_budget() {
        let mut answers = Answers::default();
        let verdict = Arc::new(Verdict::Refused {
            status: 401,
            reason: "x".repeat(1000),
        });
        for n in 0..40_000 {
            answers.keep(
                Arc::from(format!("key {n}")),
                verdict.clone(),
                Duration::from_secs(60),
            );
        }
        assert!(answers.bytes <= MAX_CACHED_BYTES);
        assert_eq!(answers.kept.len(), answers.order.len());
        assert!(answers.kept.contains_key("key 39999") && !answers.kept.contains_key("key 0"));
    }
}
