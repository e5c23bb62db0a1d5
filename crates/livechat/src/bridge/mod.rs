//! The Django Channels layer bridge (`LIVECHAT_CHANNELS_LAYER`, docs/channels.md): livechat takes
//! part in the app's `channels_redis` layer on the app's own Redis, in its wire format (`layer`),
//! so that the app's `group_send` to a room's group reaches livechat's clients and livechat's
//! messages reach the app's consumers.
//!
//! - **In**: the bridge's channel in a room's group is `{name}!{group}`; all of them share one
//!   sorted set, as a process's channels do in `channels_redis`. One node at a time (a lease in the
//!   layer's Redis) reads it and publishes each message in its room, with a nonce made from the
//!   body, so that a message read twice (a reader that died) is stored once. Groups are joined
//!   for the configured rooms, the rooms with members on this node, and the groups the app's
//!   consumers are in (found by SCAN), and refreshed well within the group expiry.
//! - **Out**: every message this node stores (`Engine::observe_stored`), those that came from the
//!   layer excepted, is sent to its room's group as `{"type", "message"}` (and `id`, `ts`, `user`
//!   with `LIVECHAT_CHANNELS_META=on`), to every channel but the bridge's own, within each
//!   channel's capacity. What waits for the layer is bounded in bytes; past it, messages are
//!   dropped and counted (they are in livechat's history all the same).
//!
//! The layer is not livechat's store: while its Redis is down livechat's own chat goes on,
//! `/readyz` says so in `channels_layer`, `livechat_channels_layer_up` is 0, and one line is
//! logged per change.

pub mod fernet;
pub mod layer;
mod link;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{Switch, parse_duration};
use crate::engine::{Engine, EngineError, StoredObserver};
use crate::hub::Hub;
use crate::message::{Author, Draft, Nonce, StoredMessage};
use crate::metrics::{LayerIn, LayerOut, Metrics};
use crate::room::RoomName;

use fernet::FernetError;
use layer::{Codec, DecodeError};
use link::{Link, LinkSettings, Taken};

/// Messages sent to the layer at once (those waiting, up to this).
const SEND_BATCH: usize = 64;
/// Bytes of messages waiting to be sent to the layer; past it, new ones are dropped.
const MAX_WAITING_BYTES: usize = 16 * 1024 * 1024;
/// What each waiting message counts for besides its text.
const MESSAGE_OVERHEAD: usize = 256;
/// Most groups the bridge stays in.
const MAX_GROUPS: usize = 100_000;
/// How often the rooms and groups to be in are looked at.
const MEMBERSHIP_TICK: Duration = Duration::from_secs(1);
/// How often the app's groups are searched for (SCAN of every host).
const DISCOVERY_EVERY: Duration = Duration::from_secs(5);
/// The reading lease's time to live; it is extended at every read (at least once a second).
const LEASE_TTL: Duration = Duration::from_secs(5);
/// Between two tries of something that failed.
const RETRY: Duration = Duration::from_secs(1);
/// Failures for this long after the last success make an outage.
const OUTAGE_AFTER: Duration = Duration::from_secs(2);
/// A kind of problem is logged at most this often (the rest are counted).
const LOG_EVERY: Duration = Duration::from_secs(60);

/// The bridge's settings (flags and environment variables), the app's `CHANNEL_LAYERS` config
/// written again for livechat.
#[derive(Clone, clap::Args)]
pub struct ChannelsSettings {
    /// The app's channel layer (`channels_redis`' `hosts`): Redis URLs, comma-separated, in the
    /// app's order. Unset: no bridge.
    #[arg(
        id = "channels_layer",
        long = "channels-layer",
        env = "LIVECHAT_CHANNELS_LAYER",
        value_delimiter = ','
    )]
    pub layer: Vec<String>,

    /// The group of a room in the app, `{room}` standing for the room's name.
    #[arg(
        id = "channels_group",
        long = "channels-group",
        env = "LIVECHAT_CHANNELS_GROUP",
        default_value = "chat_{room}"
    )]
    pub group: String,

    /// The `type` of chat messages in the app's groups (`chat.message` and `chat_message` name
    /// the same handler in Channels, and are taken alike).
    #[arg(
        id = "channels_kind",
        long = "channels-type",
        env = "LIVECHAT_CHANNELS_TYPE",
        default_value = "chat.message"
    )]
    pub kind: String,

    /// The layer's `prefix`.
    #[arg(
        id = "channels_prefix",
        long = "channels-prefix",
        env = "LIVECHAT_CHANNELS_PREFIX",
        default_value = "asgi"
    )]
    pub prefix: String,

    /// The layer's `expiry`: a message not read within it is lost.
    #[arg(id = "channels_expiry",
        long = "channels-expiry", env = "LIVECHAT_CHANNELS_EXPIRY", value_parser = parse_duration, default_value = "60s")]
    pub expiry: Duration,

    /// The layer's `group_expiry`: a channel not added again to a group within it leaves it.
    #[arg(id = "channels_group_expiry",
        long = "channels-group-expiry", env = "LIVECHAT_CHANNELS_GROUP_EXPIRY", value_parser = parse_duration, default_value = "1d")]
    pub group_expiry: Duration,

    /// The layer's `capacity`: messages a channel holds; a full channel does not get more.
    #[arg(
        id = "channels_capacity",
        long = "channels-capacity",
        env = "LIVECHAT_CHANNELS_CAPACITY",
        default_value_t = 100
    )]
    pub capacity: u64,

    /// The layer's `symmetric_encryption_keys`, comma-separated, the first encrypting.
    #[arg(
        id = "channels_keys",
        long = "channels-keys",
        env = "LIVECHAT_CHANNELS_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub keys: Vec<String>,

    /// Rooms whose groups the bridge is in from the start, comma-separated (besides the rooms with
    /// members here and the groups the app's consumers are in).
    #[arg(
        id = "channels_rooms",
        long = "channels-rooms",
        env = "LIVECHAT_CHANNELS_ROOMS",
        value_delimiter = ','
    )]
    pub rooms: Vec<String>,

    /// `on`: messages sent to the layer carry `id`, `ts` and `user` (when they have an author)
    /// besides `type` and `message`.
    #[arg(id = "channels_meta",
        long = "channels-meta", env = "LIVECHAT_CHANNELS_META", value_enum, default_value_t = Switch::Off)]
    pub meta: Switch,

    /// The bridge's channels are `{name}!{group}`; every node of one deployment uses the same.
    #[arg(
        id = "channels_name",
        long = "channels-name",
        env = "LIVECHAT_CHANNELS_NAME",
        default_value = "livechat"
    )]
    pub name: String,
}

impl std::fmt::Debug for ChannelsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelsSettings")
            .field(
                "layer",
                &self
                    .layer
                    .iter()
                    .map(|url| crate::redact_url(url))
                    .collect::<Vec<_>>(),
            )
            .field("group", &self.group)
            .field("kind", &self.kind)
            .field("prefix", &self.prefix)
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl ChannelsSettings {
    pub fn enabled(&self) -> bool {
        !self.layer.is_empty()
    }

    /// The settings for the start-up line, by argument id; the keys as their number.
    pub fn summary(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "channels_layer",
                format!(
                    "{:?}",
                    self.layer
                        .iter()
                        .map(|url| crate::redact_url(url))
                        .collect::<Vec<_>>()
                ),
            ),
            ("channels_group", self.group.clone()),
            ("channels_kind", self.kind.clone()),
            ("channels_prefix", self.prefix.clone()),
            ("channels_expiry", format!("{:?}", self.expiry)),
            ("channels_group_expiry", format!("{:?}", self.group_expiry)),
            ("channels_capacity", self.capacity.to_string()),
            ("channels_keys", format!("{} set", self.keys.len())),
            ("channels_rooms", format!("{:?}", self.rooms)),
            ("channels_meta", format!("{:?}", self.meta)),
            ("channels_name", self.name.clone()),
        ]
    }
}

/// `chat_{room}`: the group of a room, and the room of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupPattern {
    before: String,
    after: String,
}

impl GroupPattern {
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let Some((before, after)) = pattern.split_once("{room}") else {
            return Err(format!(
                "LIVECHAT_CHANNELS_GROUP `{pattern}` has no `{{room}}`"
            ));
        };
        if after.contains("{room}") {
            return Err(format!(
                "LIVECHAT_CHANNELS_GROUP `{pattern}` has `{{room}}` twice"
            ));
        }
        if !format!("{before}{after}").chars().all(group_char) {
            return Err(format!(
                "LIVECHAT_CHANNELS_GROUP `{pattern}`: a Channels group name has only ASCII letters, digits, `-`, `_` and `.`"
            ));
        }
        Ok(Self {
            before: before.to_owned(),
            after: after.to_owned(),
        })
    }

    /// The room's group; `None` for a room no Channels group can name (direct messages, too long).
    pub fn group(&self, room: &RoomName) -> Option<String> {
        let group = format!("{}{}{}", self.before, room.as_str(), self.after);
        (group.len() < 100 && group.chars().all(group_char)).then_some(group)
    }

    pub fn room(&self, group: &str) -> Option<RoomName> {
        let room = group
            .strip_prefix(&self.before)?
            .strip_suffix(&self.after)?;
        RoomName::parse(room).ok()
    }

    /// The SCAN glob of the groups of rooms.
    fn glob(&self) -> String {
        format!(
            "{}*{}",
            link::escape_glob(&self.before),
            link::escape_glob(&self.after)
        )
    }
}

fn group_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// Channels dispatch `a.b` and `a_b` to the same handler.
fn same_type(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.chars()
            .zip(b.chars())
            .all(|(a, b)| a == b || (matches!(a, '.' | '_') && matches!(b, '.' | '_')))
}

/// A message stored here, waiting to be sent to the layer.
struct Outgoing {
    message: StoredMessage,
    bytes: usize,
}

pub struct Bridge {
    link: Link,
    codec: Codec,
    pattern: GroupPattern,
    kind: String,
    meta: bool,
    rooms: Vec<RoomName>,
    group_expiry: Duration,
    max_message_bytes: usize,
    node: String,
    engine: Arc<dyn Engine>,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    health: Health,
    /// Groups the bridge is in, and when each was last wanted.
    groups: Mutex<HashMap<String, Instant>>,
    outgoing: mpsc::UnboundedSender<Outgoing>,
    /// Taken by the task that sends to the layer.
    waiting: Mutex<Option<mpsc::UnboundedReceiver<Outgoing>>>,
    waiting_bytes: AtomicUsize,
    /// Problems logged at most once a minute each: when last logged, and how many since.
    quiet: Mutex<HashMap<&'static str, (Instant, u64)>>,
}

/// Whether the layer's Redis answers, told once per change.
struct Health {
    state: Mutex<HealthState>,
    /// It answers again after an outage: the groups are joined again at once (a Redis that
    /// restarted without its data has forgotten them).
    came_back: AtomicBool,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct HealthState {
    /// Why it is down.
    down: Option<String>,
    last_success: Option<Instant>,
}

impl Health {
    fn state(&self) -> std::sync::MutexGuard<'_, HealthState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn succeeded(&self) {
        let mut state = self.state();
        state.last_success = Some(Instant::now());
        if state.down.take().is_some() {
            self.came_back.store(true, Ordering::Relaxed);
            tracing::info!("the Channels layer's Redis answers again: the bridge goes on");
        }
        self.metrics.channels_layer_up.set(1.0);
    }

    /// A failure right after a success is not an outage yet: each connection finds out that
    /// Redis restarted by failing once (a broken pipe), while the others already work.
    fn failed(&self, error: &redis::RedisError) {
        let mut state = self.state();
        if state
            .last_success
            .is_some_and(|success| success.elapsed() < OUTAGE_AFTER)
        {
            return;
        }
        if state.down.is_none() {
            tracing::warn!(%error, "the Channels layer's Redis does not answer: livechat's own chat goes on, the bridge waits");
        }
        state.down = Some(error.to_string());
        self.metrics.channels_layer_up.set(0.0);
    }
}

/// What `/readyz` says of the bridge.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct LayerStatus {
    /// `up` or `down`.
    status: &'static str,
    /// Why it is down.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

pub struct BridgeParts {
    pub engine: Arc<dyn Engine>,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    pub node: String,
    pub max_message_bytes: usize,
    pub timeout: Duration,
}

impl Bridge {
    /// Checks the settings and opens the layer's hosts (lazily); `None` without
    /// `LIVECHAT_CHANNELS_LAYER`. The bridge observes what the engine stores from then on.
    pub fn start(
        settings: &ChannelsSettings,
        parts: BridgeParts,
    ) -> Result<Option<Arc<Self>>, String> {
        if !settings.enabled() {
            return Ok(None);
        }
        let pattern = GroupPattern::parse(&settings.group)?;
        if settings.kind.is_empty() {
            return Err("LIVECHAT_CHANNELS_TYPE is empty".into());
        }
        if settings.name.is_empty()
            || settings.name.contains('!')
            || !settings.name.chars().all(group_char)
        {
            return Err(format!(
                "LIVECHAT_CHANNELS_NAME `{}`: ASCII letters, digits, `-`, `_` and `.` only",
                settings.name
            ));
        }
        let rooms = settings
            .rooms
            .iter()
            .map(|room| {
                RoomName::parse(room.trim())
                    .map_err(|error| format!("LIVECHAT_CHANNELS_ROOMS: {error}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let link = Link::open(LinkSettings {
            urls: &settings.layer,
            prefix: &settings.prefix,
            name: &settings.name,
            expiry: settings.expiry,
            group_expiry: settings.group_expiry,
            capacity: settings.capacity,
            timeout: parts.timeout,
        })
        .map_err(|error| format!("LIVECHAT_CHANNELS_LAYER: {error}"))?;
        let (outgoing, waiting) = mpsc::unbounded_channel();
        parts.metrics.channels_layer_up.set(1.0);
        tracing::info!(
            hosts = ?settings.layer.iter().map(|url| crate::redact_url(url)).collect::<Vec<_>>(),
            group = %settings.group,
            kind = %settings.kind,
            prefix = %settings.prefix,
            encrypted = !settings.keys.is_empty(),
            "the Django Channels layer bridge"
        );
        let bridge = Arc::new(Self {
            link,
            codec: Codec::new(&settings.keys, settings.expiry.as_secs()),
            pattern,
            kind: settings.kind.clone(),
            meta: settings.meta == Switch::On,
            rooms,
            group_expiry: settings.group_expiry,
            max_message_bytes: parts.max_message_bytes,
            node: parts.node,
            engine: parts.engine.clone(),
            hub: parts.hub,
            health: Health {
                state: Mutex::new(HealthState::default()),
                came_back: AtomicBool::new(false),
                metrics: parts.metrics.clone(),
            },
            metrics: parts.metrics,
            groups: Mutex::new(HashMap::new()),
            outgoing,
            waiting: Mutex::new(Some(waiting)),
            waiting_bytes: AtomicUsize::new(0),
            quiet: Mutex::new(HashMap::new()),
        });
        parts.engine.observe_stored(bridge.clone());
        Ok(Some(bridge))
    }

    pub fn status(&self) -> LayerStatus {
        let state = self.health.state();
        LayerStatus {
            status: if state.down.is_some() { "down" } else { "up" },
            reason: state.down.clone(),
        }
    }

    /// Logs a kind of problem at most once a minute, with how many there were since.
    fn complain(&self, kind: &'static str, detail: &dyn std::fmt::Display) {
        let mut quiet = self
            .quiet
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        match quiet.get_mut(kind) {
            Some((last, count)) if now.duration_since(*last) < LOG_EVERY => *count += 1,
            entry => {
                let before = entry.map_or(0, |(_, count)| std::mem::take(count));
                tracing::warn!(
                    kind,
                    more_since_last_logged = before,
                    "Channels layer bridge: {detail} (logged at most once a minute)"
                );
                quiet.insert(kind, (now, 0));
            }
        }
    }

    /// Runs the bridge until `shutdown`: joining groups, reading the layer, sending to it.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        tokio::join!(
            self.clone().join_groups(shutdown.clone()),
            self.clone().read(shutdown.clone()),
            self.send(shutdown),
        );
    }

    /// Keeps the bridge in the groups of the rooms it should hear.
    async fn join_groups(self: Arc<Self>, shutdown: CancellationToken) {
        let mut last_discovery: Option<Instant> = None;
        let mut last_refresh = Instant::now();
        let refresh_every = (self.group_expiry / 4).min(Duration::from_secs(60));
        let mut ticks = tokio::time::interval(MEMBERSHIP_TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = shutdown.cancelled() => return,
            }
            let mut wanted: Vec<String> = self
                .rooms
                .iter()
                .cloned()
                .chain(self.hub.room_counts().into_iter().map(|(room, _)| room))
                .filter_map(|room| self.pattern.group(&room))
                .collect();
            if last_discovery.is_none_or(|last| last.elapsed() >= DISCOVERY_EVERY) {
                match self
                    .link
                    .groups_like(&self.pattern.glob(), MAX_GROUPS)
                    .await
                {
                    Ok(found) => {
                        last_discovery = Some(Instant::now());
                        wanted.extend(
                            found
                                .into_iter()
                                .filter(|group| self.pattern.room(group).is_some()),
                        );
                    }
                    Err(error) => {
                        self.health.failed(&error);
                        continue;
                    }
                }
            }
            let now = Instant::now();
            let fresh: Vec<String> = {
                let mut groups = self
                    .groups
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let mut fresh = Vec::new();
                for group in wanted {
                    if groups.len() >= MAX_GROUPS && !groups.contains_key(&group) {
                        self.complain(
                            "groups",
                            &format!("in {MAX_GROUPS} groups already: no more are joined"),
                        );
                        continue;
                    }
                    if groups.insert(group.clone(), now).is_none() {
                        fresh.push(group);
                    }
                }
                fresh
            };
            let came_back = self.health.came_back.swap(false, Ordering::Relaxed);
            let joining = if came_back || last_refresh.elapsed() >= refresh_every {
                last_refresh = now;
                let mut groups = self
                    .groups
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                groups.retain(|_, seen| now.duration_since(*seen) < self.group_expiry);
                groups.keys().cloned().collect()
            } else {
                fresh
            };
            if joining.is_empty() {
                continue;
            }
            match self.link.join(&joining).await {
                Ok(()) => self.health.succeeded(),
                Err(error) => {
                    self.health.failed(&error);
                    // Tried again at the next tick.
                    let mut groups = self
                        .groups
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                    for group in &joining {
                        groups.remove(group);
                    }
                }
            }
        }
    }

    /// Reads the bridge's channel while this node holds the lease, and publishes what it reads.
    async fn read(self: Arc<Self>, shutdown: CancellationToken) {
        let mut holding = false;
        while !shutdown.is_cancelled() {
            holding = self.hold_lease(holding).await;
            if !holding {
                pause(&shutdown, RETRY).await;
                continue;
            }
            // Not cut short by shutdown: a blocking read dropped half-way could lose the message
            // Redis hands it.
            let (taken, expired) = match self.link.take().await {
                Ok(taken) => taken,
                Err(error) => {
                    self.health.failed(&error);
                    pause(&shutdown, RETRY).await;
                    continue;
                }
            };
            if expired > 0 {
                self.metrics.layer_in(LayerIn::Expired, expired);
                tracing::warn!(
                    expired,
                    "messages sent to livechat through the Channels layer expired there unread: lost"
                );
            }
            if taken.is_empty() {
                continue;
            }
            if !self.publish_all(&taken, &shutdown).await {
                // Shutting down: they stay in flight, for the next reader.
                return;
            }
            if let Err(error) = self.link.done(&taken).await {
                self.health.failed(&error);
            }
        }
    }

    /// Takes or extends the lease on reading the bridge's channel: whether this node holds it
    /// now (a Redis failure counts as not). On taking it (`holding` false), what the last reader
    /// took and did not finish is put back first, to be read again.
    async fn hold_lease(&self, holding: bool) -> bool {
        match self.link.hold_lease(&self.node, LEASE_TTL).await {
            Ok(true) => self.health.succeeded(),
            Ok(false) => return false,
            Err(error) => {
                self.health.failed(&error);
                return false;
            }
        }
        if !holding {
            match self.link.put_back().await {
                Ok(0) => {}
                Ok(put_back) => tracing::info!(
                    put_back,
                    "read again what the previous reader of the Channels layer left unfinished"
                ),
                Err(error) => {
                    self.health.failed(&error);
                    return false;
                }
            }
        }
        true
    }

    /// Publishes messages read from the layer, in order, all in the engine's queue at once;
    /// false if they could not all be before shutdown.
    async fn publish_all(&self, taken: &[Taken], shutdown: &CancellationToken) -> bool {
        let publications: Vec<Publication> = taken
            .iter()
            .filter_map(|taken| self.publication(&taken.body))
            .collect();
        let mut pending = &publications[..];
        while !pending.is_empty() {
            let receipts: Vec<_> = pending
                .iter()
                .map(|publication| self.engine.publish(publication.draft()))
                .collect();
            let mut failed = None;
            for (at, receipt) in receipts.into_iter().enumerate() {
                match receipt.await {
                    // A duplicate was published before (by a reader that did not finish).
                    Ok(accepted) if accepted.original.is_some() => {}
                    Ok(_) => self.metrics.layer_in(LayerIn::Published, 1),
                    Err(EngineError::Refused(refused)) => {
                        self.metrics.layer_in(LayerIn::Refused, 1);
                        self.complain(
                            "refused",
                            &format!("a message from the layer refused: {refused}"),
                        );
                    }
                    Err(EngineError::Stopped) => return false,
                    Err(error) => {
                        if failed.is_none() {
                            self.complain(
                                "store",
                                &format!("cannot store a message from the layer yet: {error}"),
                            );
                            failed = Some(at);
                        }
                    }
                }
            }
            let Some(failed) = failed else {
                return true;
            };
            // livechat's store is down or overloaded: from the first that failed on, they are
            // published again (those stored meanwhile are known by their nonces), and what
            // follows waits in the layer (within its capacity and expiry).
            if !pause(shutdown, RETRY).await {
                return false;
            }
            pending = &pending[failed..];
        }
        true
    }

    /// What a layer message publishes, if it is a chat message for one of livechat's rooms (the
    /// others are counted and dropped here).
    fn publication(&self, body: &[u8]) -> Option<Publication> {
        let message = match self.codec.open(body) {
            Ok(message) => message,
            Err(DecodeError::Fernet(FernetError::Expired)) => {
                self.metrics.layer_in(LayerIn::Expired, 1);
                return None;
            }
            Err(error) => {
                self.metrics.layer_in(LayerIn::Malformed, 1);
                self.complain(
                    "malformed",
                    &format!("a message from the layer dropped: {error}"),
                );
                return None;
            }
        };
        if !same_type(&message.kind, &self.kind) {
            self.metrics.layer_in(LayerIn::Ignored, 1);
            return None;
        }
        let room = message
            .channels
            .iter()
            .filter_map(|channel| self.link.group_of(channel))
            .find_map(|group| self.pattern.room(group));
        let Some(room) = room else {
            self.metrics.layer_in(LayerIn::Ignored, 1);
            return None;
        };
        let Some(value) = message.body.get("message") else {
            self.metrics.layer_in(LayerIn::Malformed, 1);
            self.complain(
                "malformed",
                &format!(
                    "a `{}` message from the layer without `message` dropped",
                    message.kind
                ),
            );
            return None;
        };
        let text = value.to_string();
        if text.len() > self.max_message_bytes {
            self.metrics.layer_in(LayerIn::Oversized, 1);
            self.complain(
                "oversized",
                &format!("a message from the layer of {} bytes dropped (LIVECHAT_MAX_MESSAGE_BYTES is {})", text.len(), self.max_message_bytes),
            );
            return None;
        }
        let text = RawValue::from_string(text).ok()?;
        let digest = Sha256::digest(body);
        let nonce = format!("layer-{}", hex(&digest[..16]));
        Some(Publication {
            room,
            text,
            user: message.body.get("user").and_then(author).map(Arc::new),
            nonce: Nonce::parse(&nonce).ok()?,
        })
    }

    /// Sends what this node stored to the layer, in order, waiting out the layer's outages.
    async fn send(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(mut waiting) = self.take_waiting() else {
            return;
        };
        let mut batch = Vec::with_capacity(SEND_BATCH);
        loop {
            let stopping = tokio::select! {
                received = waiting.recv_many(&mut batch, SEND_BATCH) => if received == 0 {
                    return;
                } else {
                    false
                },
                () = shutdown.cancelled() => true,
            };
            if stopping {
                // What is waiting gets one try.
                while let Ok(outgoing) = waiting.try_recv() {
                    batch.push(outgoing);
                }
            }
            // Runs of messages to one group go in one round trip per host.
            let mut rest = &batch[..];
            while let Some(first) = rest.first() {
                let group = self.pattern.group(&first.message.room);
                let run = rest
                    .iter()
                    .take_while(|outgoing| outgoing.message.room == first.message.room)
                    .count();
                let (sending, after) = rest.split_at(run);
                rest = after;
                if let Some(group) = group
                    && !self.send_run(&group, sending, &shutdown).await
                {
                    let unsent = sending.len() + rest.len();
                    tracing::warn!(
                        unsent,
                        "stopping with messages not sent to the Channels layer (they are in livechat's history)"
                    );
                    self.metrics.layer_out(LayerOut::Dropped, unsent as u64);
                    return;
                }
                let bytes = sending.iter().map(|outgoing| outgoing.bytes).sum();
                self.waiting_bytes.fetch_sub(bytes, Ordering::Relaxed);
            }
            batch.clear();
            if stopping {
                return;
            }
        }
    }

    /// Sends messages of one room to its group, waiting out the layer's outages; false if
    /// shutdown came first.
    async fn send_run(&self, group: &str, run: &[Outgoing], shutdown: &CancellationToken) -> bool {
        let bodies: Vec<_> = run
            .iter()
            .map(|outgoing| self.outgoing_body(&outgoing.message))
            .collect();
        loop {
            let sent = self
                .link
                .group_send(group, bodies.len(), |message, channels| {
                    self.codec.seal(&bodies[message], channels)
                })
                .await;
            match sent {
                Ok(over_capacity) => {
                    self.health.succeeded();
                    self.metrics.layer_out(LayerOut::Sent, bodies.len() as u64);
                    if over_capacity > 0 {
                        self.metrics
                            .layer_out(LayerOut::OverCapacity, over_capacity);
                        self.complain(
                            "capacity",
                            &format!("channels of group {group} at their capacity did not get {over_capacity} message(s)"),
                        );
                    }
                    return true;
                }
                Err(error) => {
                    self.health.failed(&error);
                    if !pause(shutdown, RETRY).await {
                        return false;
                    }
                }
            }
        }
    }

    fn take_waiting(&self) -> Option<mpsc::UnboundedReceiver<Outgoing>> {
        self.waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }

    /// `{"type", "message"}`, and with meta `id`, `ts`, `user`.
    fn outgoing_body(&self, message: &StoredMessage) -> serde_json::Map<String, serde_json::Value> {
        let mut body = serde_json::Map::new();
        body.insert("type".into(), self.kind.clone().into());
        body.insert(
            "message".into(),
            serde_json::from_str(message.message.get()).unwrap_or(serde_json::Value::Null),
        );
        if self.meta {
            body.insert("id".into(), message.id.into());
            body.insert("ts".into(), message.ts.into());
            if let Some(user) = message
                .user
                .as_deref()
                // One that cannot be written is logged and counted there, and left out.
                .and_then(|user| crate::json::to_value(user).ok())
            {
                body.insert("user".into(), user);
            }
        }
        body
    }
}

impl StoredObserver for Bridge {
    fn stored(&self, message: &StoredMessage) {
        let bytes = message.message.get().len() + MESSAGE_OVERHEAD;
        let waiting = self.waiting_bytes.fetch_add(bytes, Ordering::Relaxed);
        if waiting + bytes > MAX_WAITING_BYTES {
            self.waiting_bytes.fetch_sub(bytes, Ordering::Relaxed);
            self.metrics.layer_out(LayerOut::Dropped, 1);
            self.complain(
                "dropped",
                &format!("{MAX_WAITING_BYTES} bytes of messages wait for the layer already: a message of room {} is not sent to it (it is in livechat's history)", message.room),
            );
            return;
        }
        let _ = self.outgoing.send(Outgoing {
            message: message.clone(),
            bytes,
        });
    }
}

struct Publication {
    room: RoomName,
    text: Box<RawValue>,
    user: Option<Arc<Author>>,
    nonce: Nonce,
}

impl Publication {
    fn draft(&self) -> Draft {
        Draft {
            room: self.room.clone(),
            message: self.text.clone(),
            user: self.user.clone(),
            nonce: Some(self.nonce.clone()),
            reply_to: None,
            from_layer: true,
        }
    }
}

/// The author a layer message names in `user` (`{"id", "name"}`, as livechat sends it).
fn author(user: &serde_json::Value) -> Option<Author> {
    let text = |value: Option<&serde_json::Value>| match value {
        Some(serde_json::Value::String(text)) if !text.is_empty() && text.len() <= 256 => {
            Some(text.clone())
        }
        Some(serde_json::Value::Number(number)) => Some(number.to_string()),
        _ => None,
    };
    let author = Author {
        id: text(user.get("id")),
        name: text(user.get("name")),
    };
    (author.id.is_some() || author.name.is_some()).then_some(author)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Waits `period` unless shutdown comes first: false then.
async fn pause(shutdown: &CancellationToken, period: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(period) => true,
        () = shutdown.cancelled() => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_rooms_to_groups_and_back() {
        let pattern = GroupPattern::parse("chat_{room}").unwrap();
        let lobby = RoomName::parse("lobby").unwrap();
        assert_eq!(pattern.group(&lobby).as_deref(), Some("chat_lobby"));
        assert_eq!(pattern.room("chat_lobby"), Some(lobby));
        assert_eq!(pattern.room("other_lobby"), None);
        assert_eq!(pattern.room("chat_"), None);
        assert_eq!(pattern.glob(), "chat_*");
        let dm = RoomName::parse("dm:1:2").unwrap();
        assert_eq!(pattern.group(&dm), None);
        let wrapped = GroupPattern::parse("app.{room}.chat").unwrap();
        assert_eq!(wrapped.room("app.x-1.chat").unwrap().as_str(), "x-1");
        assert!(GroupPattern::parse("chat").is_err());
        assert!(GroupPattern::parse("{room}{room}").is_err());
        assert!(GroupPattern::parse("chat:{room}").is_err());
    }

    #[test]
    fn takes_dotted_and_underscored_types_alike() {
        assert!(same_type("chat.message", "chat_message"));
        assert!(same_type("chat.message", "chat.message"));
        assert!(!same_type("chat.message", "chat.messages"));
        assert!(!same_type("chat.message", "user.joined"));
    }

    #[test]
    fn reads_authors_as_livechat_writes_them() {
        let user = serde_json::json!({"id": 42, "name": "Alice"});
        assert_eq!(
            author(&user),
            Some(Author {
                id: Some("42".into()),
                name: Some("Alice".into())
            })
        );
        assert_eq!(author(&serde_json::json!("alice")), None);
        assert_eq!(author(&serde_json::json!({})), None);
    }
}
