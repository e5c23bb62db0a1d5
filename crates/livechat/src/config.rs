//! Settings: every one is a command-line flag and an environment variable, with embedded defaults
//! so that `livechat` with no arguments serves a single node on 127.0.0.1:8003.

use std::path::PathBuf;
use std::time::Duration;

use std::num::NonZeroU32;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::auth::{Access, AuthMode};
use crate::hooks::OnFailure;
use crate::rate::Rate;
use crate::room::RoomName;
use crate::webhooks::EventKind;

/// livechat: a real-time chat server, compatible with the Django Channels live chat API
/// (docs/live-chat-api.md), with durable history, tokens, limits and several nodes over Redis.
#[derive(Debug, Clone, Parser)]
#[command(name = "livechat", version, about, long_about = None)]
pub struct Config {
    /// Address (or host name) and port to serve HTTP and WebSocket on, e.g. `0.0.0.0:8003`,
    /// `localhost:8003`, `[::1]:8003`; port 0 picks a free port.
    #[arg(long, env = "LIVECHAT_BIND", default_value = "127.0.0.1:8003", value_parser = parse_bind)]
    pub bind: String,

    /// Directory for the embedded history file (`history.sqlite3`); created if missing.
    #[arg(
        long,
        global = true,
        env = "LIVECHAT_DATA_DIR",
        default_value = "./data"
    )]
    pub data_dir: PathBuf,

    /// Redis URL (`redis://host:port/db`): with it, this node shares rooms and history with every
    /// node on the same Redis. With `--redis-cluster`, a comma-separated list of cluster nodes.
    #[arg(long, env = "REDIS_URL", value_parser = parse_redis_urls)]
    pub redis_url: Option<String>,

    /// Redis host, the original service's convention; used when `REDIS_URL` is not set.
    #[arg(long, env = "REDIS_HOST")]
    pub redis_host: Option<String>,

    /// Redis port, with `REDIS_HOST`.
    #[arg(long, env = "REDIS_PORT", default_value_t = 6379)]
    pub redis_port: u16,

    /// Talk to a Redis Cluster (Redis 7+): sharded pub/sub (SPUBLISH/SSUBSCRIBE), keys of a room
    /// in one hash slot.
    #[arg(long, env = "LIVECHAT_REDIS_CLUSTER")]
    pub redis_cluster: bool,

    /// Redis Sentinel addresses (`host:port`, comma-separated), instead of `REDIS_URL`: the
    /// master named `LIVECHAT_REDIS_MASTER_NAME` is found through them and followed after a
    /// failover.
    #[arg(long, env = "LIVECHAT_REDIS_SENTINEL", value_delimiter = ',')]
    pub redis_sentinel: Vec<String>,

    /// The name the sentinels know the master by.
    #[arg(long, env = "LIVECHAT_REDIS_MASTER_NAME", default_value = "mymaster")]
    pub redis_master_name: String,

    /// Acknowledge a publish only once this many replicas have it (`WAIT`), so that an
    /// acknowledged message survives the master's death; 0: once the master has it. Not with a
    /// cluster.
    #[arg(long, env = "LIVECHAT_REDIS_WAIT_REPLICAS", default_value_t = 0)]
    pub redis_wait_replicas: u32,

    /// Prefix of every Redis key and channel of this deployment.
    #[arg(long, global = true, env = "LIVECHAT_REDIS_PREFIX", default_value = "livechat", value_parser = parse_prefix)]
    pub redis_prefix: String,

    /// Redis engine: a room's keys (history, counter, epoch) expire after this long without a
    /// message, so Redis does not keep every room ever used; `0` keeps them.
    #[arg(long, global = true, env = "LIVECHAT_ROOM_TTL", value_parser = parse_duration, default_value = "30d")]
    pub room_ttl: Duration,

    /// Longest wait for one Redis command; past it the publish fails (HTTP 503 / error frame).
    #[arg(long, global = true, env = "LIVECHAT_REDIS_TIMEOUT", value_parser = parse_duration, default_value = "2s")]
    pub redis_timeout: Duration,

    /// Name of this node in the Redis room registry; default: a random one per process.
    #[arg(long, env = "LIVECHAT_NODE_ID")]
    pub node_id: Option<String>,

    /// A node that has not refreshed its room registration for this long counts as gone, and its
    /// members vanish from `GET /chat/rooms/`. It refreshes every third of it.
    #[arg(long, env = "LIVECHAT_NODE_TTL", value_parser = parse_duration, default_value = "6s")]
    pub node_ttl: Duration,

    /// Where history is kept on the embedded engine: `sqlite` (durable) or `memory` (lost on exit).
    #[arg(long, env = "LIVECHAT_STORE", value_enum, default_value_t = StoreKind::Sqlite)]
    pub store: StoreKind,

    /// SQLite durability: `full` fsyncs every batch commit (survives power loss), `normal`
    /// survives a process crash but may lose the last commits on power loss.
    #[arg(long, env = "LIVECHAT_SQLITE_SYNC", value_enum, default_value_t = SqliteSync::Full)]
    pub sqlite_sync: SqliteSync,

    /// Room used by `POST /chat/send/` and `GET /chat/history/` when the request names none.
    #[arg(long, env = "LIVECHAT_DEFAULT_ROOM", default_value = "lobby", value_parser = parse_room)]
    pub default_room: RoomName,

    /// Largest accepted message: a WebSocket frame (closed with 1009 above it) or an HTTP body (413).
    #[arg(long, env = "LIVECHAT_MAX_MESSAGE_BYTES", default_value_t = 1024 * 1024,
          value_parser = parse_message_bytes)]
    pub max_message_bytes: usize,

    /// Messages kept per room; older ones are deleted as new ones arrive.
    #[arg(long, env = "LIVECHAT_HISTORY_MAX_COUNT", default_value_t = 10_000)]
    pub history_max_count: u64,

    /// Bytes of messages kept per room (their JSON and author); the oldest are deleted past it,
    /// the newest message stays whatever its size.
    #[arg(long, env = "LIVECHAT_HISTORY_MAX_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub history_max_bytes: u64,

    /// Largest `GET /chat/history/` answer, in bytes of messages: a page stops before the message
    /// that would cross it (it always holds at least one) and says `"more": true`.
    #[arg(long, env = "LIVECHAT_HISTORY_PAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub history_page_bytes: usize,

    /// How long a publish's nonce is remembered: a second publish to the room with the same
    /// nonce within it is answered with the first message, not stored again (`0`: not checked).
    #[arg(long, global = true, env = "LIVECHAT_DEDUPE_WINDOW", default_value = "10m", value_parser = parse_duration)]
    pub dedupe_window: Duration,

    /// Most messages replayed to a client that connects with `?since=`; older missed ones are
    /// announced with a `gap` event (the history page byte cap bounds the replay too).
    #[arg(long, env = "LIVECHAT_REPLAY_MAX", default_value_t = 1000)]
    pub replay_max: usize,

    /// Maximum age of kept messages, e.g. `90s`, `30m`, `12h`, `7d`; unset keeps them regardless of age.
    #[arg(long, env = "LIVECHAT_HISTORY_MAX_AGE", value_parser = parse_duration)]
    pub history_max_age: Option<Duration>,

    /// Frames queued for one WebSocket client before it counts as a slow consumer and is closed (1008).
    #[arg(long, env = "LIVECHAT_OUTBOUND_QUEUE", default_value_t = 1024)]
    pub outbound_queue: usize,

    /// Bytes queued for one WebSocket client before it counts as a slow consumer and is closed
    /// (1008); a single message larger than this still goes out alone.
    #[arg(long, env = "LIVECHAT_OUTBOUND_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub outbound_bytes: usize,

    /// `off`: anyone may connect and publish, clients may name themselves with `?name=` (the
    /// original service's behaviour). `required`: a token (or the API key, for HTTP) is needed.
    #[arg(long, env = "LIVECHAT_AUTH", value_enum, default_value_t = AuthMode::Off)]
    pub auth: AuthMode,

    /// Secret that signs HS256 tokens (and that `livechat token` signs with).
    #[arg(long, env = "LIVECHAT_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Path to a PEM public key that verifies RS256, ES256 or EdDSA tokens.
    #[arg(long, env = "LIVECHAT_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,

    /// Required `iss` claim of tokens, if set.
    #[arg(long, env = "LIVECHAT_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` claim of tokens, if set.
    #[arg(long, env = "LIVECHAT_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Server key for backends (`Authorization: Bearer KEY`): any room, may publish as any user.
    #[arg(long, env = "LIVECHAT_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Browser origins allowed besides pages on the host the request was addressed to (any port)
    /// and loopback pages on loopback requests, comma-separated: `https://chat.example.com`,
    /// `https://*.example.com`, `*` for any; `self` keeps only the exact own origin and these.
    #[arg(long, env = "LIVECHAT_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Publishes allowed per WebSocket connection, and per user or client IP over HTTP, e.g.
    /// `20/s`, `600/m`; unset: no limit.
    #[arg(long, env = "LIVECHAT_RATE_LIMIT", value_parser = Rate::parse)]
    pub rate_limit: Option<Rate>,

    /// Publishes allowed at once above the rate (the bucket's size, 1 or more); default: the
    /// rate's count. Only with `LIVECHAT_RATE_LIMIT`.
    #[arg(long, env = "LIVECHAT_RATE_BURST", value_parser = parse_burst)]
    pub rate_burst: Option<NonZeroU32>,

    /// The app's URL asked who a caller without a token is (docs/hooks.md): 200 with claims,
    /// 401/403 to refuse; anything else refuses the caller with 503.
    #[arg(long, env = "LIVECHAT_CONNECT_HOOK")]
    pub connect_hook: Option<String>,

    /// The app's URL asked before a client's message is stored: 200 `{}` accepts it, 200
    /// `{"message": NEW}` stores NEW instead, 4xx `{"error": R}` refuses it (docs/hooks.md).
    #[arg(long, env = "LIVECHAT_PUBLISH_HOOK")]
    pub publish_hook: Option<String>,

    /// Request headers passed to the connect hook, comma-separated (nothing else of a request
    /// leaves the server).
    #[arg(
        long,
        env = "LIVECHAT_HOOK_HEADERS",
        value_delimiter = ',',
        default_value = "Cookie,Authorization"
    )]
    pub hook_headers: Vec<String>,

    /// Longest wait for a hook's answer (waiting for a turn included), and for a webhook request.
    #[arg(long, env = "LIVECHAT_HOOK_TIMEOUT", value_parser = parse_positive_duration, default_value = "2s")]
    pub hook_timeout: Duration,

    /// Calls to each hook in flight at once; the others wait their turn within the timeout.
    #[arg(long, env = "LIVECHAT_HOOK_CONCURRENCY", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub hook_concurrency: u32,

    /// How long a connect hook answer is reused for calls with the same forwarded headers and
    /// room (`0`: never).
    #[arg(long, env = "LIVECHAT_HOOK_CACHE", value_parser = parse_duration, default_value = "5s")]
    pub hook_cache: Duration,

    /// What becomes of a message when the publish hook fails (times out, answers nonsense):
    /// `reject` it with an error, or `accept` it as sent.
    #[arg(long, env = "LIVECHAT_PUBLISH_HOOK_FAILURE", value_enum, default_value_t = OnFailure::Reject)]
    pub publish_hook_failure: OnFailure,

    /// The app's URL that events are posted to (messages, joins and leaves, rooms occupied and
    /// vacated), at least once, in order per room, batched (docs/hooks.md).
    #[arg(long, env = "LIVECHAT_WEBHOOK_URL")]
    pub webhook_url: Option<String>,

    /// Signs webhooks and hook calls: `X-Livechat-Signature: t=UNIX,v1=HMAC-SHA256(secret,
    /// t + "." + body)` in hex.
    #[arg(long, env = "LIVECHAT_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,

    /// Event types sent to the webhook URL, comma-separated; default all.
    #[arg(
        long,
        env = "LIVECHAT_WEBHOOK_EVENTS",
        value_enum,
        value_delimiter = ','
    )]
    pub webhook_events: Vec<EventKind>,

    /// Bytes of events kept for the webhook URL while it does not take them; past it, new events
    /// are dropped (counted and logged).
    #[arg(long, env = "LIVECHAT_WEBHOOK_OUTBOX_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub webhook_outbox_bytes: u64,

    /// How long after sending a message its author may edit or delete it (`30m`, `1h`);
    /// unset: always. Moderators may at any time.
    #[arg(long, env = "LIVECHAT_EDIT_WINDOW", value_parser = parse_duration)]
    pub edit_window: Option<Duration>,

    /// permessage-deflate (RFC 7692) for WebSocket clients that offer it: `on`, or `off` (never
    /// agreed). A room's frame is compressed once for all the members that agreed to it.
    #[arg(long, env = "LIVECHAT_COMPRESSION", value_enum, default_value_t = Switch::On)]
    pub compression: Switch,

    /// Frames whose payload is shorter than this many bytes go uncompressed (RSV1 clear), even
    /// to clients that agreed to permessage-deflate.
    #[arg(long, env = "LIVECHAT_COMPRESS_MIN_BYTES", default_value_t = 256)]
    pub compress_min_bytes: usize,

    /// The chat page at `/` and `/r/{room}`: `on`, or `off` (those paths answer 404).
    #[arg(long, env = "LIVECHAT_PAGE", value_enum, default_value_t = Switch::On)]
    pub page: Switch,

    /// Who may read stored history (`GET /chat/history/`, and the replay of a WebSocket resuming
    /// with `?since=`): `open` (whoever the auth rules let into the room), `api-key` (the server
    /// key only), or `off` (history answers an empty list, as the original service did, and
    /// `?since=` is refused).
    #[arg(long, env = "LIVECHAT_HISTORY_READS", value_enum, default_value_t = Access::Open)]
    pub history_reads: Access,

    /// Who may list rooms (`GET /chat/rooms/`): `open`, `api-key` (the server key only), or
    /// `off` (403).
    #[arg(long, env = "LIVECHAT_ROOM_LIST", value_enum, default_value_t = Access::Open)]
    pub room_list: Access,

    /// A request (WebSocket handshake included) whose headers, or whose body, have not all
    /// arrived this long after it started is dropped.
    #[arg(long, env = "LIVECHAT_REQUEST_TIMEOUT", value_parser = parse_duration, default_value = "10s")]
    pub request_timeout: Duration,

    /// Most WebSocket connections at once; past it, handshakes get 503. Default: the open-file
    /// limit less a reserve (128 + 1%) for HTTP requests, the store and Redis.
    #[arg(long, env = "LIVECHAT_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Most WebSocket connections from one client IP; unset: no such limit.
    #[arg(long, env = "LIVECHAT_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<u32>,

    /// Proxies whose `X-Forwarded-For`/`-Proto`/`-Host` headers are believed, comma-separated
    /// addresses or CIDR ranges (`127.0.0.1,10.0.0.0/8`); none by default.
    #[arg(long, env = "LIVECHAT_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,

    /// Serve `GET /metrics` on this address (host:port) instead of the main port, so that it need
    /// not be public; unset: on the main port.
    #[arg(long, env = "LIVECHAT_METRICS_BIND", value_parser = parse_bind)]
    pub metrics_bind: Option<String>,

    /// PEM certificate chain (leaf first): with `--tls-key`, serve https:// and wss:// directly.
    #[arg(long, env = "LIVECHAT_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of the certificate.
    #[arg(long, env = "LIVECHAT_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// A WebSocket client that sent nothing for this long is pinged; `0` never pings.
    #[arg(long, env = "LIVECHAT_PING_INTERVAL", value_parser = parse_duration, default_value = "25s")]
    pub ping_interval: Duration,

    /// A pinged client that sends nothing (no pong, no frame) for this long is closed.
    #[arg(long, env = "LIVECHAT_PONG_TIMEOUT", value_parser = parse_duration, default_value = "10s")]
    pub pong_timeout: Duration,

    /// Under load, each WebSocket client is written at most once per this interval, so messages
    /// that arrive close together leave in one write; the first message after a quiet interval
    /// goes out at once. `0` writes every delivery as soon as it is made.
    #[arg(long, env = "LIVECHAT_WRITE_INTERVAL", value_parser = parse_duration, default_value = "5ms")]
    pub write_interval: Duration,

    /// How long shutdown waits for WebSocket clients to take their close frame; also how long
    /// any closing connection waits for the client's answer to its close frame.
    #[arg(long, env = "LIVECHAT_SHUTDOWN_TIMEOUT", value_parser = parse_duration, default_value = "5s")]
    pub shutdown_timeout: Duration,

    /// Log filter in `tracing` syntax, e.g. `info` or `livechat=debug`.
    #[arg(long, env = "LIVECHAT_LOG", default_value = "info", value_parser = parse_log_filter)]
    pub log: String,

    /// Log lines as `text` (for people) or `json` (one object per line, for log collectors).
    #[arg(long, env = "LIVECHAT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(flatten)]
    pub channels: crate::bridge::ChannelsSettings,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Prints a token signed with LIVECHAT_JWT_SECRET, e.g.
    /// `livechat token --sub alice --name Alice --rooms lobby,dev --ttl 1h`.
    Token(TokenArgs),
    /// Copies the embedded history in the data directory to FILE, consistent as of one moment,
    /// while the node on it keeps serving: `livechat backup --data-dir ./data --to FILE`.
    Backup(BackupArgs),
    /// Puts a backup into a data directory without history (same history and ids; the
    /// numbering goes on in a new epoch): `livechat restore --from FILE --data-dir ./data`.
    Restore(RestoreArgs),
    /// Copies the embedded history in the data directory into Redis (or a Redis Cluster), for
    /// nodes started on Redis after it; resumable and idempotent:
    /// `livechat migrate --data-dir ./data --to redis://127.0.0.1:6379/`.
    Migrate(MigrateArgs),
}

#[derive(Debug, Clone, Args)]
pub struct BackupArgs {
    /// The backup file to write (replaced only once the new copy is whole).
    #[arg(long)]
    pub to: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    /// A file written by `livechat backup`.
    #[arg(long)]
    pub from: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    /// The Redis to copy into (`redis://host:port/db`); with `--cluster`, a comma-separated list
    /// of cluster nodes. Keys get `--redis-prefix`, rooms `--room-ttl` from now.
    #[arg(long, value_parser = parse_redis_urls)]
    pub to: String,
    /// `--to` names a Redis Cluster's nodes.
    #[arg(long)]
    pub cluster: bool,
}

#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The user's id (`sub`).
    #[arg(long)]
    pub sub: String,
    /// Display name (`name`).
    #[arg(long)]
    pub name: Option<String>,
    /// Rooms the user may join and read, comma-separated; `dev-*` is a prefix. Default: all.
    #[arg(long, value_delimiter = ',')]
    pub rooms: Option<Vec<String>>,
    /// Lifetime, e.g. `15m`, `1h`, `7d`.
    #[arg(long, value_parser = parse_duration, default_value = "1h")]
    pub ttl: Duration,
    /// A token that may read but not publish.
    #[arg(long)]
    pub read_only: bool,
    /// A moderator's token (`moderate` claim): may change and delete any message, ban and mute,
    /// call the server API; the chat page shows it delete and ban actions.
    #[arg(long)]
    pub moderate: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    Sqlite,
    Memory,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SqliteSync {
    Full,
    Normal,
}

impl Config {
    /// The effective settings in one line for the start-up log, credentials left out (secrets
    /// show as `set`, Redis URLs without their password).
    pub fn summary(&self) -> String {
        let set = |value: &Option<String>| if value.is_some() { "set" } else { "unset" }.to_owned();
        let url = |value: &Option<String>| {
            value
                .as_deref()
                .map_or("unset".to_owned(), crate::redact_url)
        };
        let redis = self.redis_urls().map(|urls| {
            urls.iter()
                .map(|url| crate::redact_url(url))
                .collect::<Vec<_>>()
                .join(",")
        });
        let settings: Vec<(&str, String)> = vec![
            ("bind", self.bind.clone()),
            ("data_dir", self.data_dir.display().to_string()),
            (
                "engine",
                redis
                    .as_ref()
                    .map_or("embedded".to_owned(), |urls| format!("redis({urls})")),
            ),
            (
                "history_store",
                match redis {
                    Some(_) => "redis-streams".to_owned(),
                    None => format!("{:?}", self.store).to_lowercase(),
                },
            ),
            ("redis_cluster", self.redis_cluster.to_string()),
            ("redis_sentinel", format!("{:?}", self.redis_sentinel)),
            ("redis_master_name", self.redis_master_name.clone()),
            ("redis_wait_replicas", self.redis_wait_replicas.to_string()),
            ("redis_prefix", self.redis_prefix.clone()),
            ("redis_timeout", format!("{:?}", self.redis_timeout)),
            ("room_ttl", format!("{:?}", self.room_ttl)),
            ("node_id", format!("{:?}", self.node_id)),
            ("node_ttl", format!("{:?}", self.node_ttl)),
            ("sqlite_sync", format!("{:?}", self.sqlite_sync)),
            ("default_room", self.default_room.to_string()),
            ("max_message_bytes", self.max_message_bytes.to_string()),
            ("history_max_count", self.history_max_count.to_string()),
            ("history_max_bytes", self.history_max_bytes.to_string()),
            ("history_max_age", format!("{:?}", self.history_max_age)),
            ("history_page_bytes", self.history_page_bytes.to_string()),
            ("dedupe_window", format!("{:?}", self.dedupe_window)),
            ("replay_max", self.replay_max.to_string()),
            ("outbound_queue", self.outbound_queue.to_string()),
            ("outbound_bytes", self.outbound_bytes.to_string()),
            ("auth", format!("{:?}", self.auth)),
            ("jwt_secret", set(&self.jwt_secret)),
            ("jwt_public_key", format!("{:?}", self.jwt_public_key)),
            ("jwt_issuer", format!("{:?}", self.jwt_issuer)),
            ("jwt_audience", format!("{:?}", self.jwt_audience)),
            ("api_key", set(&self.api_key)),
            ("allowed_origins", format!("{:?}", self.allowed_origins)),
            (
                "rate_limit",
                format!(
                    "{:?}",
                    self.rate_limit
                        .map(|rate| format!("{}/{:?}", rate.count, rate.per))
                ),
            ),
            ("rate_burst", format!("{:?}", self.rate_burst)),
            ("connect_hook", url(&self.connect_hook)),
            ("publish_hook", url(&self.publish_hook)),
            ("hook_headers", format!("{:?}", self.hook_headers)),
            ("hook_timeout", format!("{:?}", self.hook_timeout)),
            ("hook_concurrency", self.hook_concurrency.to_string()),
            ("hook_cache", format!("{:?}", self.hook_cache)),
            (
                "publish_hook_failure",
                format!("{:?}", self.publish_hook_failure),
            ),
            ("webhook_url", url(&self.webhook_url)),
            ("webhook_secret", set(&self.webhook_secret)),
            ("webhook_events", format!("{:?}", self.webhook_events)),
            (
                "webhook_outbox_bytes",
                self.webhook_outbox_bytes.to_string(),
            ),
            ("edit_window", format!("{:?}", self.edit_window)),
            ("page", format!("{:?}", self.page)),
            ("compression", format!("{:?}", self.compression)),
            ("compress_min_bytes", self.compress_min_bytes.to_string()),
            ("history_reads", format!("{:?}", self.history_reads)),
            ("room_list", format!("{:?}", self.room_list)),
            ("request_timeout", format!("{:?}", self.request_timeout)),
            ("max_connections", format!("{:?}", self.max_connections)),
            (
                "max_connections_per_ip",
                format!("{:?}", self.max_connections_per_ip),
            ),
            ("trusted_proxies", format!("{:?}", self.trusted_proxies)),
            ("metrics_bind", format!("{:?}", self.metrics_bind)),
            ("tls_cert", format!("{:?}", self.tls_cert)),
            ("tls_key", format!("{:?}", self.tls_key)),
            ("ping_interval", format!("{:?}", self.ping_interval)),
            ("pong_timeout", format!("{:?}", self.pong_timeout)),
            ("write_interval", format!("{:?}", self.write_interval)),
            ("shutdown_timeout", format!("{:?}", self.shutdown_timeout)),
            ("log", self.log.clone()),
            ("log_format", format!("{:?}", self.log_format)),
        ];
        settings
            .into_iter()
            .chain(self.channels.summary())
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Settings that are accepted one by one but make no sense together, refused before the
    /// server starts (the error says what to do); and warnings for those that work but are
    /// unwise, to be logged once at start.
    pub fn check(&self) -> Result<Vec<String>, String> {
        if self.rate_burst.is_some() && self.rate_limit.is_none() {
            return Err(
                "LIVECHAT_RATE_BURST is set without LIVECHAT_RATE_LIMIT, so it would do \
                 nothing: set a rate too (e.g. LIVECHAT_RATE_LIMIT=20/s), or unset the burst"
                    .into(),
            );
        }
        let mut warnings = Vec::new();
        if let Some(secret) = &self.jwt_secret
            && secret.len() < MIN_SECRET_BYTES
        {
            warnings.push(format!(
                "LIVECHAT_JWT_SECRET is {} bytes long: an HS256 secret shorter than \
                 {MIN_SECRET_BYTES} bytes can be guessed offline from one token; use a random one \
                 (e.g. openssl rand -hex 32)",
                secret.len()
            ));
        }
        Ok(warnings)
    }

    /// What is kept, where, for how long, and who can read it: said plainly at start, since
    /// the original service stored nothing.
    pub fn exposure(&self) -> String {
        let stored = match (self.redis_urls(), self.store) {
            (Some(urls), _) => format!(
                "in Redis streams at {} ({})",
                urls.iter()
                    .map(|url| crate::redact_url(url))
                    .collect::<Vec<_>>()
                    .join(","),
                match self.room_ttl.is_zero() {
                    true => "kept while Redis keeps them".to_owned(),
                    false => format!(
                        "a room's keys expire {} after its last message",
                        humanize(self.room_ttl)
                    ),
                }
            ),
            (None, StoreKind::Sqlite) => {
                format!("in {}", self.data_dir.join("history.sqlite3").display())
            }
            (None, StoreKind::Memory) => "in memory (lost when the server stops)".to_owned(),
        };
        let kept = if self.history_max_count == 0 {
            "no message is kept (LIVECHAT_HISTORY_MAX_COUNT=0)".to_owned()
        } else {
            format!(
                "messages are stored {stored}: the newest {} per room, at most {} bytes per room, {}",
                self.history_max_count,
                self.history_max_bytes,
                self.history_max_age
                    .map_or("whatever their age".to_owned(), |age| {
                        format!("for {}", humanize(age))
                    })
            )
        };
        let who = match self.auth {
            AuthMode::Off => "anyone who can reach the server (LIVECHAT_AUTH=off)",
            AuthMode::Required => "callers with a token for the room, or the server key",
        };
        let access = |access: Access| match access {
            Access::Open => who,
            Access::ApiKey => "the server key only",
            Access::Off => "nobody",
        };
        format!(
            "{kept}; history can be read by {}; the room list by {}; the chat page is {}",
            access(self.history_reads),
            access(self.room_list),
            match self.page {
                Switch::On => "served at /",
                Switch::Off => "off",
            }
        )
    }

    /// The Redis nodes to use, if any: `REDIS_URL`, else `REDIS_HOST` + `REDIS_PORT`.
    /// Where Redis is (the sentinels' addresses with `LIVECHAT_REDIS_SENTINEL`), if it is used.
    pub fn redis_urls(&self) -> Option<Vec<String>> {
        if !self.redis_sentinel.is_empty() {
            return Some(
                self.redis_sentinel
                    .iter()
                    .map(|s| s.trim().to_owned())
                    .collect(),
            );
        }
        match (&self.redis_url, &self.redis_host) {
            (Some(urls), _) => Some(urls.split(',').map(|url| url.trim().to_owned()).collect()),
            (None, Some(host)) => Some(vec![format!("redis://{host}:{}/", self.redis_port)]),
            (None, None) => None,
        }
    }
}

/// An HS256 secret shorter than this is warned about.
const MIN_SECRET_BYTES: usize = 32;

/// `30d`, `12h`, `90s`: a duration as settings write it.
fn humanize(duration: Duration) -> String {
    let seconds = duration.as_secs();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if seconds > 0 && seconds.is_multiple_of(size) {
            return format!("{}{unit}", seconds / size);
        }
    }
    format!("{seconds}s")
}

/// Largest message that can be set: far above any real need, far below where sizes overflow.
const MAX_MESSAGE_BYTES_LIMIT: usize = 1 << 30;

fn parse_bind(value: &str) -> Result<String, String> {
    let expected =
        || format!("`{value}` is not HOST:PORT, e.g. 127.0.0.1:8003, localhost:8003 or [::1]:8003");
    let (host, port) = value.rsplit_once(':').ok_or_else(expected)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(expected());
    }
    Ok(value.to_owned())
}

/// One URL, or with a cluster several comma-separated: `redis://`, `rediss://` or `unix://`.
fn parse_redis_urls(value: &str) -> Result<String, String> {
    use redis::IntoConnectionInfo;
    for url in value.split(',').map(str::trim) {
        if let Err(error) = url.into_connection_info() {
            return Err(format!(
                "`{}` is not a Redis URL ({error}): expected redis://[:password@]host:port/db, \
                 rediss://... for TLS, or unix:///path/to/socket",
                crate::redact_url(url)
            ));
        }
    }
    Ok(value.to_owned())
}

fn parse_message_bytes(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(bytes) if (1..=MAX_MESSAGE_BYTES_LIMIT).contains(&bytes) => Ok(bytes),
        _ => Err(format!(
            "`{value}` is not a size from 1 to {MAX_MESSAGE_BYTES_LIMIT} bytes"
        )),
    }
}

/// A duration that must not be zero.
fn parse_positive_duration(value: &str) -> Result<Duration, String> {
    match parse_duration(value)? {
        duration if duration.is_zero() => Err(format!("`{value}` must be more than 0")),
        duration => Ok(duration),
    }
}

fn parse_burst(value: &str) -> Result<NonZeroU32, String> {
    value.trim().parse::<NonZeroU32>().map_err(|_| {
        format!(
            "`{value}` is not a burst: a whole number of messages, 1 or more, that a client may \
             send at once above LIVECHAT_RATE_LIMIT (unset: the rate's own count)"
        )
    })
}

fn parse_log_filter(value: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(value)
        .map(|_| value.to_owned())
        .map_err(|error| {
            format!("`{value}` is not a log filter such as info or livechat=debug: {error}")
        })
}

fn parse_prefix(value: &str) -> Result<String, String> {
    if value.is_empty() || value.contains(['{', '}']) {
        return Err("the prefix must be non-empty and hold no braces (they mark hash tags)".into());
    }
    Ok(value.to_owned())
}

fn parse_room(value: &str) -> Result<RoomName, String> {
    RoomName::parse(value).map_err(|e| e.to_string())
}

/// Parses `45`, `45s`, `30m`, `12h` or `7d` (a bare number is seconds).
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let value = value.trim();
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{value}` is not a duration such as 90s, 30m, 12h or 7d"))?;
    let seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "ms" => return Ok(Duration::from_millis(number)),
        _ => {
            return Err(format!(
                "unknown duration unit `{unit}` (use ms, s, m, h or d)"
            ));
        }
    };
    number
        .checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("`{value}` is too long a duration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_names_every_setting() {
        use clap::CommandFactory;
        let config = Config::parse_from(["livechat"]);
        let summary = config.summary();
        // Where Redis is and what stores history are said as `engine` and `history_store`.
        let said_otherwise = ["redis_url", "redis_host", "redis_port", "store"];
        for argument in Config::command().get_arguments() {
            let name = argument.get_id().as_str();
            if said_otherwise.contains(&name) || name == "help" || name == "version" {
                continue;
            }
            assert!(
                summary.contains(&format!(" {name}=")) || summary.starts_with(&format!("{name}=")),
                "the summary leaves out {name}: {summary}"
            );
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("18446744073709551615d").is_err());
    }

    #[test]
    fn defaults_need_no_arguments() {
        let config = Config::try_parse_from(["livechat"]).expect("defaults parse");
        assert_eq!(config.bind, "127.0.0.1:8003");
        assert_eq!(config.max_message_bytes, 1 << 20);
        assert_eq!(config.default_room.as_str(), "lobby");
        assert_eq!(config.redis_urls(), None);
    }

    #[test]
    fn redis_from_url_or_host_and_port() {
        let config =
            Config::try_parse_from(["livechat", "--redis-host", "cache", "--redis-port", "7000"])
                .unwrap();
        assert_eq!(
            config.redis_urls(),
            Some(vec!["redis://cache:7000/".to_owned()])
        );
        let config =
            Config::try_parse_from(["livechat", "--redis-url", "redis://a:1, redis://b:2"])
                .unwrap();
        assert_eq!(config.redis_urls().unwrap(), ["redis://a:1", "redis://b:2"]);
        assert!(Config::try_parse_from(["livechat", "--redis-prefix", "a{b}"]).is_err());
        assert!(Config::try_parse_from(["livechat", "--redis-url", "http://nope"]).is_err());
    }

    #[test]
    fn the_summary_shows_no_credentials() {
        let config = Config::try_parse_from([
            "livechat",
            "--jwt-secret",
            "hunter2",
            "--api-key",
            "k3y",
            "--redis-url",
            "redis://user:pa55@cache:6379/0",
        ])
        .unwrap();
        let summary = config.summary();
        for secret in ["hunter2", "k3y", "pa55"] {
            assert!(!summary.contains(secret), "{summary}");
        }
        assert!(summary.contains("jwt_secret=set") && summary.contains("redis://***@cache"));
    }

    #[test]
    fn bad_settings_are_refused_with_what_was_expected() {
        for bad in [
            &["--bind", "8003"][..],
            &["--bind", "localhost"],
            &["--bind", "host:99999"],
            &["--max-message-bytes", "0"],
            &["--max-message-bytes", "18446744073709551615"],
            &["--log", "livechat=loud"],
            &["--ping-interval", "99999999999999999999d"],
        ] {
            let args = std::iter::once("livechat").chain(bad.iter().copied());
            assert!(Config::try_parse_from(args).is_err(), "{bad:?}");
        }
        for good in ["localhost:8003", "[::1]:0", "0.0.0.0:8003"] {
            assert!(
                Config::try_parse_from(["livechat", "--bind", good]).is_ok(),
                "{good}"
            );
        }
    }
}
